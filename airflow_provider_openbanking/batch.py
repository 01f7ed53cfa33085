"""Batched extraction: one task instance works through many consents with a bounded pool.

Every batched operator is a declaration of *what* to fetch per consent and per account and *where*
it lands; this module does the rest, the same way for all of them:

- **Selection** (:func:`select_consents`): an explicit list of consent ids, or shard ``k`` of ``n``
  of a connection's consents by a stable hash of the consent id (:func:`shard_of`: SHA-256, the
  same in every process and Python version -- never ``hash()``, which is salted per process), or
  by default the connection's ``default`` consent.
- **Work queue** (:class:`BatchRunner`): consents x accounts on ``max_workers`` threads. A consent
  is *planned* first (its accounts are listed, which also makes its one refresh grant), then its
  accounts are landed; queued accounts go before new consents, so consents finish in order and
  memory does not grow with the batch.
- **Isolation**: a revoked consent (602, refused refresh), an account the bank does not support
  (704/705, skipped), or transient errors that outlast the transport's retry budget are recorded
  for that consent and never stop the others. A lost consent cancels only its own queued accounts.
- **Outcomes** (:class:`ConsentOutcome`): per consent, the files landed, accounts skipped or
  failed, and a short reason code. :func:`summarize` turns them into a bounded XCom summary
  (counts and failed consent ids with their reason codes, never records);
  :func:`failure_message` names the failed consents once everything else has landed.
- **Resume**: once a consent is done, its outcome is written next to the landed files (a *consent
  marker*, :meth:`Layout.consent_marker`) with the run id. A retry of the same run reuses a
  landed consent's marker without calling the API, does not retry a consent that failed for good
  (revoked: retrying cannot help), and re-lands only the missing accounts of a consent that failed
  part-way.
- **Guard** (:func:`check_map_length`): a list that a DAG is about to map over and that is longer
  than ``[core] max_map_length`` fails at once, naming its length, the limit and the setting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_openbanking.exceptions import (
    AccountUnavailableError,
    ApiError,
    ConnectionConfigError,
    ConsentRequiredError,
    TransientApiError,
)

log = logging.getLogger(__name__)

try:
    from airflow_provider_openbanking.consents import DEFAULT_CONSENT_ID
except ImportError:  # pragma: no cover - before the consent model lands
    DEFAULT_CONSENT_ID = "default"

#: Failed consents listed by id in a task's XCom summary (the count is always complete).
MAX_FAILED_IN_SUMMARY = 50
#: Failed consents named in a task's error message.
MAX_FAILED_IN_MESSAGE = 20
#: Seconds between progress lines of a batch.
PROGRESS_EVERY_SECONDS = 30.0
MARKER_VERSION = 1


# -- selection -------------------------------------------------------------------------------------


def shard_of(consent_id: str, shard_count: int) -> int:
    """The shard (``0 … shard_count - 1``) a consent belongs to: stable across processes, hosts and
    runs, and uniform (the first 8 bytes of SHA-256)."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    digest = hashlib.sha256(str(consent_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


def shard_count_for(consents: int, consents_per_shard: int) -> int:
    """How many shards cover ``consents`` consents at about ``consents_per_shard`` each (>= 1)."""
    if consents_per_shard < 1:
        raise ValueError(f"consents_per_shard must be at least 1, got {consents_per_shard}")
    return max(1, math.ceil(consents / consents_per_shard))


def parse_id_list(value: Any, *, field: str = "consent_ids", item: str = "consent id") -> list[str] | None:
    """A list of ids from a list, a JSON list or a comma-separated string, stripped and without
    repeats (first occurrence kept); None when unset (None or ``""``).

    What a templated ``consent_ids`` argument, a ``conn_ids`` DAG param or a Variable may hold.
    Errors name ``field`` (the argument or param) and ``item`` (what one entry is).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"{field} is not a JSON list: {text[:80]!r}") from None
        else:
            value = text.split(",")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{field} must be a list of strings, got {type(value).__name__}")
    ids: list[str] = []
    for entry in value:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"a {item} must be a non-empty string, got {entry!r}")
        ids.append(entry.strip())
    return list(dict.fromkeys(ids))


def parse_consent_ids(value: Any) -> list[str] | None:
    """``consent_ids`` as a list (see :func:`parse_id_list`); None when unset."""
    return parse_id_list(value, field="consent_ids", item="consent id")


def mapped_results(results: Any) -> list[Mapping[str, Any]]:
    """The XCom values of upstream (mapped) tasks as a list of their dict results.

    Airflow hands a single value over as is when only one of several mapped task instances
    produced one (the others failed), and a lazy sequence otherwise; failed instances have none.
    """
    if results is None:
        return []
    if isinstance(results, Mapping):
        return [results]
    if isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        results = results[:]  # one request for a LazyXComSequence, not one per item plus a miss
    return [r for r in results if isinstance(r, Mapping) and r]


def check_shard(shard_index: Any, shard_count: Any) -> tuple[int, int] | None:
    """``(index, count)`` checked, or None when neither is set; a half-set pair is an error."""
    if shard_index in (None, "") and shard_count in (None, ""):
        return None
    if shard_index in (None, "") or shard_count in (None, ""):
        raise ValueError("shard_index and shard_count go together: set both or neither")
    try:
        index, count = int(shard_index), int(shard_count)
    except (TypeError, ValueError):
        raise ValueError(
            f"shard_index and shard_count must be whole numbers, got {shard_index!r} and {shard_count!r}"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard_index must be in 0..shard_count-1, got shard {index} of {count}")
    return index, count


def select_consents(
    available: Iterable[str] | None,
    *,
    consent_ids: Sequence[str] | None = None,
    shard: tuple[int, int] | None = None,
    default: str = DEFAULT_CONSENT_ID,
) -> list[str]:
    """The consents one task works on, sorted.

    ``consent_ids`` (explicit) wins; else ``shard=(k, n)`` picks the ``available`` consents whose
    :func:`shard_of` is ``k``; else ``[default]``.
    """
    if consent_ids is not None and shard is not None:
        raise ValueError("give consent_ids or a shard (shard_index/shard_count), not both")
    if consent_ids is not None:
        return list(dict.fromkeys(consent_ids))
    if shard is not None:
        index, count = shard
        return sorted(c for c in dict.fromkeys(available or ()) if shard_of(c, count) == index)
    return [default]


# -- the max_map_length guard ----------------------------------------------------------------------


def max_map_length() -> int:
    """Airflow's ``[core] max_map_length`` (1024 unless configured)."""
    try:
        from airflow.configuration import conf

        return conf.getint("core", "max_map_length", fallback=1024)
    except Exception:  # pragma: no cover - configuration not importable
        return 1024


def check_map_length(items: Sized, what: str, *, hint: str = "") -> None:
    """Fail at once, without retries, when ``items`` is longer than ``[core] max_map_length``.

    Airflow itself refuses such a list only when the task pushes it, with a message that names
    neither length nor limit, and retries the task as if that could help.
    """
    from airflow_provider_openbanking.exceptions import MapLengthError

    limit = max_map_length()
    if len(items) > limit:
        raise MapLengthError(what, len(items), limit, hint or None)


# -- outcomes --------------------------------------------------------------------------------------


def reason_code(exc: BaseException) -> str:
    """A short, stable code for why a consent failed (the XCom summary and the store carry it)."""
    if isinstance(exc, ConsentRequiredError):
        if exc.code == "602":
            return "602"
        return "refresh_rejected" if exc.status in (400, 401, 403) else "consent_required"
    if isinstance(exc, AccountUnavailableError):
        return str(exc.code or "account_unavailable")
    if isinstance(exc, TransientApiError):
        return f"transient_{exc.code or exc.status or 'network'}"
    if isinstance(exc, ApiError):
        return str(exc.code or (f"http_{exc.status}" if exc.status else "api_error"))
    if isinstance(exc, ConnectionConfigError):
        return f"config_{exc.field}"
    return type(exc).__name__


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying the task could not fix this failure (the task then fails without retries)."""
    from airflow.sdk.exceptions import AirflowFailException

    if isinstance(exc, TransientApiError):
        return False
    # AirflowFailException: every NotRetryableError, and landing's refused records.
    return isinstance(
        exc, (ConsentRequiredError, ApiError, ConnectionConfigError, ValueError, AirflowFailException)
    )


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Landed:
    """One file a consent landed."""

    path: str
    account_id: str | None = None
    records: int = 0
    pages: int = 0
    #: ``records`` (a JSON Lines file of the dataset) or ``file`` (a statement file).
    kind: str = "records"
    #: Records the server sent that were not asked for and did not land (``PageStats.dropped``).
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "account_id": self.account_id,
            "records": self.records,
            "pages": self.pages,
            "kind": self.kind,
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Landed:
        return cls(
            str(data["path"]),
            data.get("account_id"),
            int(data.get("records") or 0),
            int(data.get("pages") or 0),
            str(data.get("kind") or "records"),
            int(data.get("dropped") or 0),
        )


@dataclass
class ConsentOutcome:
    """What one consent landed, skipped and failed in one task (thread-safe)."""

    consent_id: str
    landed: list[Landed] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed_accounts: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None
    permanent: bool = False
    resumed: bool = False
    #: Accounts a previous try of this run landed (a partial consent being redone).
    done_before: dict[str, Landed] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _lost: bool = field(default=False, repr=False)
    _transient: bool = field(default=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def records(self) -> int:
        return sum(x.records for x in self.landed if x.kind == "records")

    @property
    def pages(self) -> int:
        return sum(x.pages for x in self.landed)

    @property
    def dropped(self) -> int:
        return sum(x.dropped for x in self.landed)

    def add(self, landed: Landed) -> None:
        with self.lock:
            self.landed.append(landed)

    def skip(self, account_id: str, reason: str) -> None:
        with self.lock:
            self.skipped[account_id] = reason

    def fail(self, exc: BaseException, account_id: str | None = None) -> None:
        """Record a failure. The first one names the consent's reason (a lost consent's wins).

        The failure is permanent when the consent is lost, or when no failure of it was transient:
        a retry of the task could not change it.
        """
        with self.lock:
            lost = isinstance(exc, ConsentRequiredError)
            if account_id is not None:
                self.failed_accounts[account_id] = describe(exc)
            if self.reason is None or (lost and not self._lost):
                self.reason = reason_code(exc)
                self.error = describe(exc)
            self._lost = self._lost or lost
            self._transient = self._transient or not is_permanent(exc)
            self.permanent = self._lost or not self._transient

    def to_marker(self, run_id: str | None) -> dict[str, Any]:
        return {
            "version": MARKER_VERSION,
            "consent_id": self.consent_id,
            "run_id": run_id,
            "status": "landed" if self.ok else "failed",
            "reason": self.reason,
            "permanent": self.permanent,
            "landed": [x.to_dict() for x in sorted(self.landed, key=lambda x: (x.kind, x.path))],
            "skipped": dict(sorted(self.skipped.items())),
            "failed_accounts": sorted(self.failed_accounts),
        }

    @classmethod
    def from_marker(cls, data: dict[str, Any]) -> ConsentOutcome:
        outcome = cls(str(data["consent_id"]))
        outcome.landed = [Landed.from_dict(x) for x in data.get("landed") or []]
        outcome.skipped = {str(k): str(v) for k, v in (data.get("skipped") or {}).items()}
        outcome.reason = data.get("reason")
        outcome.permanent = bool(data.get("permanent"))
        return outcome


@dataclass
class BatchResult:
    """Every consent's outcome, in the order the consents were given."""

    outcomes: list[ConsentOutcome]
    seconds: float = 0.0

    @property
    def failed(self) -> list[ConsentOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def landed(self) -> list[Landed]:
        return [x for o in self.outcomes for x in o.landed]

    @property
    def records(self) -> int:
        return sum(o.records for o in self.outcomes)

    @property
    def pages(self) -> int:
        return sum(o.pages for o in self.outcomes)

    @property
    def dropped(self) -> int:
        return sum(o.dropped for o in self.outcomes)

    @property
    def all_permanent(self) -> bool:
        return all(o.permanent for o in self.failed)


def summarize(result: BatchResult, *, max_failed: int = MAX_FAILED_IN_SUMMARY) -> dict[str, Any]:
    """The bounded part of a task's XCom summary: counts, and failed consent ids with reasons.

    Its size does not grow with the number of consents beyond ``max_failed`` failed ids.
    """
    failed = result.failed
    return {
        "consents": {
            "selected": len(result.outcomes),
            "landed": sum(1 for o in result.outcomes if o.ok),
            "resumed": sum(1 for o in result.outcomes if o.resumed),
            "failed": len(failed),
        },
        "counts": {
            "files": sum(1 for x in result.landed if x.kind == "records"),
            "blobs": sum(1 for x in result.landed if x.kind == "file"),
            "records": result.records,
            "pages": result.pages,
            "dropped": result.dropped,
            "accounts_skipped": sum(len(o.skipped) for o in result.outcomes),
            "accounts_failed": sum(len(o.failed_accounts) for o in result.outcomes),
        },
        "failed": {o.consent_id: o.reason for o in failed[:max_failed]},
        "failed_truncated": max(0, len(failed) - max_failed),
        "seconds": round(result.seconds, 3),
    }


def failure_message(dataset: str, conn_id: str, result: BatchResult) -> str:
    """One message naming the failed consents (the first :data:`MAX_FAILED_IN_MESSAGE`), their
    reasons, and what landed anyway."""
    failed = result.failed
    shown = "; ".join(
        f"{o.consent_id}: {o.reason}"
        + (f" ({len(o.failed_accounts)} account(s))" if o.failed_accounts else "")
        for o in failed[:MAX_FAILED_IN_MESSAGE]
    )
    more = f"; and {len(failed) - MAX_FAILED_IN_MESSAGE} more" if len(failed) > MAX_FAILED_IN_MESSAGE else ""
    landed = sum(1 for o in result.outcomes if o.ok)
    files = len(result.landed)
    text = (
        f"{dataset}: {len(failed)} of {len(result.outcomes)} consent(s) of connection {conn_id!r} "
        f"failed ({shown}{more}). The other {landed} consent(s) landed in full ({files} file(s) in all)."
    )
    if any(o.reason in ("602", "refresh_rejected", "consent_required") for o in failed):
        text += (
            " Consents that failed with 602/refresh_rejected need the customer to authorize again "
            f"(`airflow-openbanking authorize --conn-id {conn_id} --consent-id <id>`)."
        )
    if not result.all_permanent:
        text += " A retry of this task redoes only the consents that did not land."
    return text


# -- the runner ------------------------------------------------------------------------------------


class ConsentWork(Protocol):
    """What a batched operator declares; every method may run on a worker thread."""

    def resume(self, consent_id: str) -> ConsentOutcome | None:
        """The outcome of an earlier try of this run, if the consent is already done (else None).
        A partly landed consent returns None but may fill ``done_before`` through :meth:`plan`."""

    def plan(self, consent_id: str, outcome: ConsentOutcome) -> Sequence[str | None]:
        """The consent's units of work: account ids, or ``[None]`` for one consent-level file.
        Runs first for each consent (it may land something itself, e.g. one accounts file)."""

    def land(self, consent_id: str, unit: str | None, outcome: ConsentOutcome) -> None:
        """Land one unit and :meth:`ConsentOutcome.add` what landed."""

    def finish(self, outcome: ConsentOutcome) -> None:
        """The consent is done (landed or failed): write its marker, stamp its store record."""


@dataclass
class _State:
    outcome: ConsentOutcome
    remaining: int = 0
    cancelled: bool = False


class BatchRunner:
    """Run a :class:`ConsentWork` over many consents on ``max_workers`` threads (see module doc)."""

    def __init__(
        self,
        work: ConsentWork,
        *,
        max_workers: int,
        label: str = "batch",
        logger: logging.Logger | Any = None,
        progress_every: float = PROGRESS_EVERY_SECONDS,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.work = work
        self.max_workers = max_workers
        self.label = label
        self.log = logger or log
        self.progress_every = progress_every

    def run(self, consent_ids: Sequence[str]) -> BatchResult:
        started = time.monotonic()
        states = {c: _State(ConsentOutcome(c)) for c in consent_ids}
        starts: deque[str] = deque(consent_ids)
        units: deque[tuple[str, str | None]] = deque()
        finishing: deque[str] = deque()
        inflight: dict[Future[Any], tuple[str, str, str | None]] = {}
        done_consents = 0
        last_progress = started
        workers = self.max_workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openbanking") as pool:
            while starts or units or finishing or inflight:
                while len(inflight) < workers and (finishing or units or starts):
                    fut: Future[Any]
                    if finishing:
                        consent = finishing.popleft()
                        fut = pool.submit(self._finish, states[consent].outcome)
                        inflight[fut] = ("finish", consent, None)
                    elif units:
                        consent, unit = units.popleft()
                        state = states[consent]
                        if state.cancelled:
                            state.remaining -= 1
                            if state.remaining == 0:
                                finishing.append(consent)
                            continue
                        fut = pool.submit(self.work.land, consent, unit, state.outcome)
                        inflight[fut] = ("land", consent, unit)
                    else:
                        consent = starts.popleft()
                        fut = pool.submit(self._start, consent, states[consent].outcome)
                        inflight[fut] = ("start", consent, None)
                if not inflight:
                    continue
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    kind, consent, unit = inflight.pop(fut)
                    state = states[consent]
                    if kind == "finish":
                        done_consents += 1
                        continue
                    exc = fut.exception()
                    if kind == "start":
                        if exc is not None:
                            self._record(state, exc, None)
                            finishing.append(consent)
                            continue
                        planned = fut.result()
                        if planned is None:  # resumed from a marker: nothing to do, nothing to write
                            done_consents += 1
                            continue
                        if not planned:
                            finishing.append(consent)
                            continue
                        state.remaining = len(planned)
                        units.extend((consent, u) for u in planned)
                        continue
                    # a unit finished
                    if exc is not None:
                        self._record(state, exc, unit)
                    state.remaining -= 1
                    if state.remaining == 0:
                        finishing.append(consent)
                now = time.monotonic()
                if now - last_progress >= self.progress_every:
                    last_progress = now
                    self._progress(states, done_consents, now - started)
        result = BatchResult([states[c].outcome for c in consent_ids], time.monotonic() - started)
        return result

    def _start(self, consent: str, outcome: ConsentOutcome) -> Sequence[str | None] | None:
        resumed = self.work.resume(consent)
        if resumed is not None:
            with outcome.lock:
                outcome.landed = resumed.landed
                outcome.skipped = resumed.skipped
                outcome.reason = resumed.reason
                outcome.error = resumed.error or (
                    f"failed in an earlier try of this run ({resumed.reason}); not retried"
                    if resumed.reason
                    else None
                )
                outcome.permanent = resumed.permanent
                outcome.resumed = True
            return None
        return list(self.work.plan(consent, outcome))

    def _finish(self, outcome: ConsentOutcome) -> None:
        try:
            self.work.finish(outcome)
        except Exception as exc:  # the data landed; only resuming it on a retry is lost
            self.log.warning(
                "%s: could not record consent %s as done: %s", self.label, outcome.consent_id, exc
            )

    def _record(self, state: _State, exc: BaseException, unit: str | None) -> None:
        consent = state.outcome.consent_id
        if isinstance(exc, AccountUnavailableError) and unit is not None:
            reason = " ".join(str(x) for x in (exc.code, exc.api_message) if x) or str(exc)
            self.log.warning("%s: skipping account %s (%s) of consent %s", self.label, unit, reason, consent)
            state.outcome.skip(unit, reason)
            return
        if isinstance(exc, ConsentRequiredError):
            if not state.cancelled:
                self.log.error("%s: consent %s is lost (%s): %s", self.label, consent, reason_code(exc), exc)
            state.cancelled = True
        elif unit is not None:
            self.log.error("%s: account %s of consent %s failed: %s", self.label, unit, consent, exc)
        else:
            self.log.error("%s: consent %s failed: %s", self.label, consent, exc)
        state.outcome.fail(exc, unit)

    def _progress(self, states: dict[str, _State], done: int, seconds: float) -> None:
        failed = sum(1 for s in states.values() if not s.outcome.ok)
        files = sum(len(s.outcome.landed) for s in states.values())
        self.log.info(
            "%s: %d of %d consent(s) done (%d failed so far), %d file(s), %.1f s",
            self.label,
            done,
            len(states),
            failed,
            files,
            seconds,
        )


__all__ = [
    "DEFAULT_CONSENT_ID",
    "BatchResult",
    "BatchRunner",
    "ConsentOutcome",
    "ConsentWork",
    "Landed",
    "check_map_length",
    "check_shard",
    "failure_message",
    "is_permanent",
    "mapped_results",
    "max_map_length",
    "parse_consent_ids",
    "parse_id_list",
    "reason_code",
    "select_consents",
    "shard_count_for",
    "shard_of",
    "summarize",
]
