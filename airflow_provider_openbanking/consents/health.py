"""Is a consent usable? One answer for the CLI and for DAGs, per (connection, consent).

:func:`consent_status` asks the API as a task would (refresh grant, then one light data call) and
returns a :class:`ConsentStatus` instead of raising for the failures a caller is asking about
(no consent, revoked, refresh token rejected, scope missing, bad connection, API down). It never
prints or returns a token.

Flinks drops a refresh token after 30 days without use, and a refresh grant counts as a use: a
check that had to refresh (always the case in a fresh process) restarts that clock, so
``last_refresh_at`` and ``days_until_idle_lapse`` describe the consent *after* the check and the
message says when the token had been used before it.

The health check that the ``openbanking_consent_health`` example DAG runs every day is the same
function with three switches: ``refresh=True`` (always make a refresh grant: it is what keeps an
idle Flinks consent alive), ``probe_scopes=True`` (one cheap call per data cluster the connection
needs, whatever the server claims it granted) and ``warn_within_days`` (a consent that had been
idle for so long that it was about to lapse is ``ok`` with a warning). :func:`health_record` turns
the result into the small record the DAG lands, :func:`summarize_health` into the DAG's verdict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_openbanking.batch import mapped_results
from airflow_provider_openbanking.consents.record import (
    DEFAULT_CONSENT_ID,
    REVOKED,
    ConsentRecord,
    now_iso,
)
from airflow_provider_openbanking.exceptions import (
    AccountUnavailableError,
    ConnectionConfigError,
    ConsentRequiredError,
    NoDataError,
    OpenBankingError,
)
from airflow_provider_openbanking.fdx import parse_scopes

if TYPE_CHECKING:
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

ConsentState = Literal["ok", "no_consent", "revoked", "refresh_rejected", "lapsed", "scope_missing", "error"]

#: Flinks drops a refresh token that has not been used for this many days.
IDLE_LAPSE_DAYS = 30
#: Default of ``warn_within_days``: an ``ok`` consent that was this close to its idle lapse
#: before the check (idle for 23 days or more) carries a warning.
IDLE_WARN_DAYS = 7.0

#: States after which only the customer (a new ``authorize``) can help.
NEEDS_AUTHORIZATION: frozenset[str] = frozenset(
    {"no_consent", "revoked", "refresh_rejected", "lapsed", "scope_missing"}
)

#: The dataset (first path segment under the landing destination) of the health records.
HEALTH_DATASET = "consent_health"


@dataclass(frozen=True)
class ConsentStatus:
    """The state of one connection's consent, safe to log, print or push to XCom (no secrets).

    ``scopes`` are the scopes the server says it granted (``None`` when it does not say);
    ``missing_scopes`` is only filled when scopes were checked. ``last_refresh_at`` is an ISO
    timestamp (UTC) of the last successful refresh grant known to the token store.

    ``idle_days``: how long the refresh token had been unused *before* this check (from the token
    store; ``None`` when it has no record). With ``probe_scopes``, ``confirmed_scopes`` are the
    needed scopes a data call answered and ``unchecked_scopes`` those no call could check (and the
    server did not report). ``warnings`` never make a consent unhealthy.
    """

    conn_id: str
    state: ConsentState
    access_token_ttl: float | None = None
    scopes: tuple[str, ...] | None = None
    last_refresh_at: str | None = None
    days_until_idle_lapse: float | None = None
    message: str = ""
    missing_scopes: tuple[str, ...] = ()
    idle_days: float | None = None
    confirmed_scopes: tuple[str, ...] = ()
    unchecked_scopes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    checked_at: str = field(default_factory=now_iso)
    consent_id: str = DEFAULT_CONSENT_ID

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def label(self) -> str:
        """``<conn_id>`` for the default consent, else ``<conn_id> consent <consent_id>``."""
        return consent_label(self.conn_id, self.consent_id)

    @property
    def summary_line(self) -> str:
        """One line for logs and alerts: ``<label>: <state>: <message>``."""
        return f"{self.label}: {self.state}: {self.message}"

    @property
    def needs_authorization(self) -> bool:
        """True when the customer has to authorize again (``airflow-openbanking authorize``)."""
        return self.state in NEEDS_AUTHORIZATION

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data["scopes"] = list(self.scopes) if self.scopes is not None else None
        for name in ("missing_scopes", "confirmed_scopes", "unchecked_scopes", "warnings"):
            data[name] = list(getattr(self, name))
        return data


def consent_label(conn_id: str, consent_id: str = DEFAULT_CONSENT_ID) -> str:
    """How a consent is named in messages: the connection id alone for ``default``."""
    return conn_id if consent_id == DEFAULT_CONSENT_ID else f"{conn_id} consent {consent_id}"


def authorize_hint(conn_id: str, consent_id: str = DEFAULT_CONSENT_ID) -> str:
    extra = "" if consent_id == DEFAULT_CONSENT_ID else f" --consent-id {consent_id}"
    return f"run `airflow-openbanking authorize --conn-id {conn_id}{extra}`"


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def idle_days(last_used: str | None, now: dt.datetime | None = None) -> float | None:
    """Days since ``last_used`` (ISO), one decimal; never negative; None when unknown."""
    used = _parse_time(last_used)
    if used is None:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    return round(max((now - used).total_seconds() / 86400, 0.0), 1)


def days_until_idle_lapse(last_used: str | None, now: dt.datetime | None = None) -> float | None:
    """Days left before a refresh token last used at ``last_used`` (ISO) lapses; never negative."""
    used = _parse_time(last_used)
    if used is None:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    left = IDLE_LAPSE_DAYS - (now - used).total_seconds() / 86400
    return round(max(left, 0.0), 1)


def _granted(record: ConsentRecord | None) -> tuple[str, ...] | None:
    if record is None or not record.scopes:
        return None
    try:
        return parse_scopes(record.scopes)
    except ValueError:  # a scope this client does not know: keep the server's words
        return tuple(record.scopes.split())


def _first(items: Iterable[Any]) -> Any:
    """The first item of a (lazy, paginated) iterable, fetching only the first page."""
    iterator = iter(items)
    try:
        return next(iterator, None)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


#: One cheap call per scope (the account-scoped ones take an account id of the consent).
_ACCOUNT_FREE_PROBES: dict[str, Callable[[OpenBankingHook], Any]] = {
    "ACCOUNT_BASIC": lambda h: _first(h.iter_accounts("lightweight")),
    "ACCOUNT_DETAILED": lambda h: _first(h.iter_accounts("details")),
    "CUSTOMER_PERSONAL": lambda h: h.get_customer(),
}


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


# Transactions and statements of a one-day window: the answer is tiny (usually empty), the
# scope check the same.
_ACCOUNT_PROBES: dict[str, Callable[[OpenBankingHook, str], Any]] = {
    "TRANSACTIONS": lambda h, a: _first(h.iter_transactions(a, _today(), _today())),
    "STATEMENTS": lambda h, a: _first(h.iter_statements(a, _today(), _today())),
    "ACCOUNT_PAYMENTS": lambda h, a: _first(h.iter_payment_networks(a)),
    "CUSTOMER_CONTACT": lambda h, a: h.get_account_contact(a),
}


def _probe(
    hook: OpenBankingHook,
    scope: str,
    account_id: str | None,
    refusals: list[ConsentRequiredError] | None = None,
) -> bool | None:
    """True: a call needing ``scope`` worked; False: it got 602; None: nothing to try it on.

    A 602 is appended to ``refusals`` when given (its API message explains the refusal).
    """
    call: Callable[[], Any]
    if scope in _ACCOUNT_FREE_PROBES:
        call = partial(_ACCOUNT_FREE_PROBES[scope], hook)
    elif scope in _ACCOUNT_PROBES and account_id is not None:
        call = partial(_ACCOUNT_PROBES[scope], hook, account_id)
    else:
        return None
    try:
        call()
    except ConsentRequiredError as exc:
        if refusals is not None:
            refusals.append(exc)
        return False
    except (NoDataError, AccountUnavailableError):
        pass  # the scope was accepted; there is just nothing there
    return True


def _probe_scopes(
    hook: OpenBankingHook, wanted: Iterable[str], account_id: str | None
) -> tuple[list[str], list[str]]:
    """Call one endpoint per scope: ``(missing, confirmed)``.

    Only used when the server does not say which scopes it granted. Scopes without an endpoint of
    their own (``INVESTMENTS``), or needing an account when there is none, are in neither list.
    """
    results = {scope: _probe(hook, scope, account_id) for scope in wanted}
    missing = [scope for scope, ok in results.items() if ok is False]
    confirmed = [scope for scope, ok in results.items() if ok is True]
    return missing, confirmed


def _first_account_id(hook: OpenBankingHook, result_type: str) -> str | None:
    first = _first(hook.iter_accounts(result_type))
    if isinstance(first, dict) and first.get("accountId"):
        return str(first["accountId"])
    return None


def _probe_every_cluster(
    hook: OpenBankingHook, wanted: Sequence[str], refusals: list[ConsentRequiredError]
) -> dict[str, bool | None]:
    """One cheap call per data cluster in ``wanted``: ``{scope: answered?}`` (None: no call could
    check it) for every scope called or wanted. The lightweight account list is always called
    (it is the revocation check and yields the account id that the per-account calls need); the
    detailed list is called when wanted, or for an account id when the lightweight one was refused.
    """
    results: dict[str, bool | None] = {}
    account_id: str | None = None
    for scope, result_type in (("ACCOUNT_BASIC", "lightweight"), ("ACCOUNT_DETAILED", "details")):
        needs_account = account_id is None and any(s in _ACCOUNT_PROBES for s in wanted)
        if scope != "ACCOUNT_BASIC" and scope not in wanted and not needs_account:
            continue
        try:
            account_id = _first_account_id(hook, result_type) or account_id
            results[scope] = True
        except ConsentRequiredError as exc:
            refusals.append(exc)
            results[scope] = False
        except NoDataError:
            results[scope] = True
    for scope in wanted:
        if scope not in results:
            results[scope] = _probe(hook, scope, account_id, refusals)
    return results


def _idle_warning(idle: float | None, warn_within_days: float | None, refreshed_now: bool) -> tuple[str, ...]:
    if idle is None or warn_within_days is None:
        return ()
    left = IDLE_LAPSE_DAYS - idle
    if left > warn_within_days:
        return ()
    text = (
        f"the refresh token had been unused for {idle:g} days, {max(left, 0):g} day(s) before "
        f"Flinks drops a consent after {IDLE_LAPSE_DAYS} idle days"
    )
    if refreshed_now:
        text += "; this check's refresh restarted that clock: is the DAG that uses this consent running?"
    else:
        text += "; use it soon"
    return (text,)


def consent_status(
    hook: OpenBankingHook,
    check_scopes: bool = False,
    *,
    required_scopes: Iterable[str] | str | None = None,
    refresh: bool = False,
    probe_scopes: bool = False,
    warn_within_days: float | None = IDLE_WARN_DAYS,
) -> ConsentStatus:
    """Check the consent behind ``hook``'s connection, the way the next task run would use it.

    Steps: read the connection and the token store; get an access token (a refresh grant unless
    this process holds a valid one -- always one with ``refresh``, which is what keeps an idle
    consent alive); list the first page of lightweight accounts. With ``check_scopes`` it also
    checks that every scope in ``required_scopes`` (default: the connection's ``scopes``) was
    granted: from the scopes the server reports, or else by calling one endpoint per scope.
    ``probe_scopes`` (implies ``check_scopes``) always calls one cheap endpoint per data cluster:
    what answers wins over what the server reports; clusters without an endpoint of their own
    (``INVESTMENTS``) fall back on the reported scopes.

    An ``ok`` consent whose refresh token had been unused for ``IDLE_LAPSE_DAYS -
    warn_within_days`` days or more before the check carries a warning (``None``: never).

    Expected failures become a state (see :data:`ConsentState`) with a one-line ``message``;
    only programming errors raise.
    """
    conn_id = hook.openbanking_conn_id
    consent_id = hook.consent_id
    idle_before: float | None = None

    def status(state: ConsentState, message: str, **fields: Any) -> ConsentStatus:
        return ConsentStatus(
            conn_id=conn_id,
            state=state,
            message=hook.redact(message),
            idle_days=idle_before,
            consent_id=consent_id,
            **fields,
        )

    hint = authorize_hint(conn_id, consent_id)
    try:
        cfg = hook.config
        active = hook.stored_consent()
    except ConnectionConfigError as exc:
        return status("error", str(exc))
    except Exception as exc:  # connection not found, consent store unreachable, ...
        if type(exc).__name__ == "AirflowNotFoundException":
            return status("error", f"Connection {conn_id!r} is not defined")
        return status("error", f"{type(exc).__name__}: {exc}")

    from_connection = consent_id == DEFAULT_CONSENT_ID and bool(cfg.refresh_token)
    if active is None and not from_connection:
        what = (
            f"connection {conn_id!r}"
            if consent_id == DEFAULT_CONSENT_ID
            else f"consent {consent_id!r} of {conn_id!r}"
        )
        return status("no_consent", f"No consent yet for {what}: {hint}")
    if active is not None and (active.state == REVOKED or not active.refresh_token):
        return status(
            "revoked",
            f"The consent was revoked here ({active.updated_at}): {hint}",
            last_refresh_at=active.last_refresh_at,
        )
    used_before = (active.last_refresh_at or active.updated_at) if active else None
    idle_before = idle_days(used_before)

    try:
        wanted = parse_scopes(required_scopes) if required_scopes is not None else cfg.scopes
    except ValueError as exc:
        return status("error", f"required_scopes {exc}")

    # 1. the refresh token (what every task does first)
    try:
        if refresh:  # a token that cannot be cached for ever: always a refresh grant
            hook.refresh_access_token()
        ttl = hook.access_token_ttl()
    except ConsentRequiredError as exc:
        detail = f" [{exc.endpoint}, HTTP {exc.status}, {exc.code}]" if exc.status else ""
        before = {"last_refresh_at": active.last_refresh_at if active else None}
        if idle_before is not None and idle_before >= IDLE_LAPSE_DAYS:
            return status(
                "lapsed",
                f"The consent lapsed: its refresh token was unused for {idle_before:g} days and Flinks "
                f"drops a consent after {IDLE_LAPSE_DAYS} idle days; the server rejected it: "
                f"{hint}{detail}",
                days_until_idle_lapse=0.0,
                **before,
            )
        return status(
            "refresh_rejected",
            "The server rejected the refresh token (revoked, lapsed after "
            f"{IDLE_LAPSE_DAYS} idle days, or rotated away): {hint}{detail}",
            days_until_idle_lapse=days_until_idle_lapse(used_before),
            **before,
        )
    except (OpenBankingError, OSError) as exc:
        return status("error", str(exc))
    except Exception as exc:  # the token store failed while saving a rotated token
        return status("error", f"{type(exc).__name__}: {exc}")

    try:
        after = hook.stored_consent()
    except Exception:
        after = active
    granted = _granted(after)
    last_refresh_at = after.last_refresh_at if after else None
    last_used = (after.last_refresh_at or after.updated_at) if after else None
    refreshed_now = bool(last_refresh_at) and last_refresh_at != used_before
    common: dict[str, Any] = {
        "access_token_ttl": round(ttl, 1),
        "scopes": granted,
        "last_refresh_at": last_refresh_at,
        "days_until_idle_lapse": days_until_idle_lapse(last_used),
        "warnings": _idle_warning(idle_before, warn_within_days, refreshed_now),
    }

    if probe_scopes:
        return _probe_status(hook, wanted, granted, status, common, hint, used_before)

    # 2. one light data call: a revoked consent can still have a valid access token (602)
    account_id: str | None = None
    if granted is None or "ACCOUNT_BASIC" in granted:
        try:
            first = _first(hook.iter_accounts("lightweight"))
        except ConsentRequiredError as exc:
            if check_scopes and granted is None:
                # revoked, or only ACCOUNT_BASIC missing? Any other scope that works tells.
                try:
                    others_missing, confirmed = _probe_scopes(
                        hook, [s for s in wanted if s != "ACCOUNT_BASIC"], None
                    )
                except (OpenBankingError, OSError) as probe_exc:
                    return status("error", str(probe_exc), **common)
                if confirmed:
                    missing = ["ACCOUNT_BASIC", *others_missing]
                    return status(
                        "scope_missing",
                        _missing_message(missing, hint),
                        missing_scopes=tuple(missing),
                        **common,
                    )
            reason = "revoked, or ACCOUNT_BASIC not granted" if granted is None else "revoked"
            return status(
                "revoked",
                f"The server refused data for this consent (602: {reason}): {hint}"
                f" [{exc.api_message or exc.endpoint}]",
                **common,
            )
        except NoDataError:
            first = None
        except (OpenBankingError, OSError) as exc:
            return status("error", str(exc), **common)
        if isinstance(first, dict) and first.get("accountId"):
            account_id = str(first["accountId"])

    # 3. scopes
    if check_scopes:
        if granted is not None:
            missing = [s for s in wanted if s not in granted]
        else:
            try:
                missing, _ = _probe_scopes(hook, [s for s in wanted if s != "ACCOUNT_BASIC"], account_id)
            except (OpenBankingError, OSError) as exc:
                return status("error", str(exc), **common)
        if missing:
            return status(
                "scope_missing",
                _missing_message(missing, hint),
                missing_scopes=tuple(missing),
                **common,
            )

    message = f"Consent OK: access token valid for {ttl:.0f}s"
    if granted is not None:
        message += f"; scopes {' '.join(granted)}"
    return status("ok", message + _idle_note(common, used_before, last_refresh_at), **common)


def _missing_message(missing: Sequence[str], hint: str) -> str:
    return f"The consent lacks scope(s) {' '.join(missing)} that the connection needs: {hint} and grant them"


def _idle_note(common: Mapping[str, Any], used_before: str | None, last_refresh_at: str | None) -> str:
    note = ""
    if common["days_until_idle_lapse"] is not None:
        note += f"; lapses after {common['days_until_idle_lapse']:g} more idle day(s)"
    if used_before and last_refresh_at and used_before != last_refresh_at:
        note += f" (this check used the refresh token; before, it was last used at {used_before})"
    return note


def _probe_status(
    hook: OpenBankingHook,
    wanted: Sequence[str],
    granted: tuple[str, ...] | None,
    status: Callable[..., ConsentStatus],
    common: dict[str, Any],
    hint: str,
    used_before: str | None,
) -> ConsentStatus:
    """Steps 2 and 3 of :func:`consent_status` with ``probe_scopes``."""
    refusals: list[ConsentRequiredError] = []
    try:
        results = _probe_every_cluster(hook, wanted, refusals)
    except (OpenBankingError, OSError) as exc:
        return status("error", str(exc), **common)
    confirmed = tuple(s for s in wanted if results[s] is True)
    missing = [s for s in wanted if results[s] is False]
    unchecked = tuple(s for s in wanted if results[s] is None)
    if granted is not None:  # no call could check these: the server's word
        missing += [s for s in unchecked if s not in granted]
    missing = [s for s in wanted if s in missing]
    fields = {**common, "confirmed_scopes": confirmed, "unchecked_scopes": unchecked}
    alive = any(ok is True for ok in results.values())
    # Every call refused, and the scopes the server reports do not explain it: revoked.
    refused_unexplained = granted is None or any(
        scope in granted for scope, ok in results.items() if ok is False
    )
    if refusals and not alive and refused_unexplained:
        first = refusals[0]
        return status(
            "revoked",
            f"The server refused every data call for this consent (602: revoked at the bank, or "
            f"no data scope left): {hint} [{first.api_message or first.endpoint}]",
            **fields,
        )
    if missing:
        return status(
            "scope_missing",
            _missing_message(missing, hint),
            missing_scopes=tuple(missing),
            **fields,
        )
    message = f"Consent OK: access token valid for {common['access_token_ttl']:.0f}s"
    message += f"; {len(confirmed)} data cluster(s) answered"
    if unchecked:
        message += f"; not checked by a call: {' '.join(unchecked)}"
    return status("ok", message + _idle_note(common, used_before, common["last_refresh_at"]), **fields)


# -- the consent health check (the ``openbanking_consent_health`` example DAG) -------------------


def health_record(status: ConsentStatus, **context: Any) -> dict[str, Any]:
    """The small record landed per consent and check: ``healthy``, every :class:`ConsentStatus`
    field, the ``summary`` line, then ``context`` (the DAG adds ``dag_id``, ``run_id`` and the data
    interval). JSON-ready, no secrets."""
    return {"healthy": status.ok, **status.as_dict(), "summary": status.summary_line, **context}


def health_record_path(
    conn_id: str,
    interval_start: dt.datetime,
    interval_end: dt.datetime,
    destination: Any = None,
) -> Any:
    """``<destination>/consent_health/conn_id=<id>/interval=<start>_<end>/consent_health.jsonl``
    (an ``ObjectStoragePath``; the destination defaults as for the operators)."""
    from airflow_provider_openbanking.landing import Layout, to_storage_path

    layout = Layout(to_storage_path(destination), HEALTH_DATASET, conn_id, interval_start, interval_end)
    return layout.records_file()


def check_consent(
    hook: OpenBankingHook,
    *,
    required_scopes: Iterable[str] | str | None = None,
    warn_within_days: float | None = IDLE_WARN_DAYS,
    **context: Any,
) -> dict[str, Any]:
    """Refresh and probe one consent (``hook``'s): its :func:`health_record`. Never raises for an
    unhealthy consent (an unexpected error becomes state ``error``)."""
    try:
        status = consent_status(
            hook,
            check_scopes=True,
            required_scopes=required_scopes,
            refresh=True,
            probe_scopes=True,
            warn_within_days=warn_within_days,
        )
    except Exception as exc:  # one consent's bug must not hide the others' health
        status = ConsentStatus(
            conn_id=hook.openbanking_conn_id,
            consent_id=hook.consent_id,
            state="error",
            message=hook.redact(f"{type(exc).__name__}: {exc}"),
        )
    return health_record(status, **context)


def check_connection_health(
    hook: OpenBankingHook,
    consent_ids: Iterable[str] | None = None,
    *,
    interval_start: dt.datetime,
    interval_end: dt.datetime,
    destination: Any = None,
    required_scopes: Iterable[str] | str | None = None,
    warn_within_days: float | None = IDLE_WARN_DAYS,
    **context: Any,
) -> dict[str, Any]:
    """Refresh, probe and land every consent of ``hook``'s connection (or ``consent_ids``).

    Each consent is checked with :func:`check_consent` through ``hook.for_consent`` (one HTTP
    session, one client token); the records land together as one JSON Lines file per connection
    and interval, atomically, at :func:`health_record_path` (a rerun replaces it). Returns a small
    per-connection result for :func:`summarize_health` (no record bodies: they are in the file):
    ``conn_id``, ``path``, ``checked``, ``healthy`` (consent ids), ``unhealthy`` (summary lines),
    ``warnings``, ``states`` (consent id -> state).
    """
    conn_id = hook.openbanking_conn_id
    try:
        ids = list(consent_ids) if consent_ids is not None else hook.consent_ids()
    except Exception as exc:  # a bad connection or an unreachable store: one error record
        ids = [hook.consent_id]
        log_error = hook.redact(f"{type(exc).__name__}: {exc}")
        records = [health_record(ConsentStatus(conn_id=conn_id, state="error", message=log_error), **context)]
    else:
        ids = ids or [DEFAULT_CONSENT_ID]
        records = [
            check_consent(
                hook if cid == hook.consent_id else hook.for_consent(cid),
                required_scopes=required_scopes,
                warn_within_days=warn_within_days,
                **context,
            )
            for cid in ids
        ]
    path = health_record_path(conn_id, interval_start, interval_end, destination)
    return land_health_records(conn_id, path, records)


def land_health_records(conn_id: str, path: Any, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Land one connection's health ``records`` at ``path`` (one JSON Lines file, atomically: a
    rerun replaces it) and return the small result :func:`summarize_health` reads: ``conn_id``,
    ``path``, ``checked``, ``healthy`` (consent ids), ``unhealthy`` (summary lines), ``warnings``,
    ``states`` (consent id -> state) -- no record bodies."""
    from airflow_provider_openbanking.landing import write_jsonl

    write_jsonl(path, records)
    return {
        "conn_id": conn_id,
        "path": str(path),
        "checked": len(records),
        "healthy": [r["consent_id"] for r in records if r["healthy"]],
        "unhealthy": [r["summary"] for r in records if not r["healthy"]],
        "warnings": [
            f"{consent_label(conn_id, r['consent_id'])}: {w}" for r in records for w in r["warnings"]
        ],
        "states": {r["consent_id"]: r["state"] for r in records},
    }


@dataclass(frozen=True)
class HealthSummary:
    """The verdict over every consent of a run. ``unhealthy``: one summary line per unhealthy
    consent (or per connection without a result); ``warnings``: ``<label>: <warning>`` lines;
    ``checked``: how many consents were checked."""

    conn_ids: tuple[str, ...]
    healthy: tuple[str, ...]
    unhealthy: tuple[str, ...]
    warnings: tuple[str, ...]
    paths: tuple[str, ...]
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.unhealthy and bool(self.conn_ids)

    def failure_message(self) -> str:
        """The failed run's exception text: a headline, then one line per unhealthy consent."""
        if not self.conn_ids:
            return "Open Banking consent health: no connection to check (the conn_ids task failed?)"
        where = ""
        if self.paths and f"/{HEALTH_DATASET}/" in self.paths[0]:
            where = f" under {self.paths[0].split(f'/{HEALTH_DATASET}/')[0]}/{HEALTH_DATASET}/"
        total = max(self.checked, len(self.healthy) + len(self.unhealthy))
        head = (
            f"{len(self.unhealthy)} of {total} Open Banking consent(s) unhealthy "
            f"(health records landed{where}):"
        )
        return "\n".join([head, *self.unhealthy])

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "connections": len(self.conn_ids),
            "healthy": list(self.healthy),
            "unhealthy": list(self.unhealthy),
            "warnings": list(self.warnings),
            "paths": list(self.paths),
        }


def summarize_health(results: Any, conn_ids: Iterable[str] | None) -> HealthSummary:
    """Judge what the check tasks returned (XCom values; failed tasks have none).

    ``results`` are per-connection results of :func:`check_connection_health` or single
    :func:`health_record` records (one consent each). A connection of ``conn_ids`` without a
    result is unhealthy (its check task failed).
    """
    by_conn: dict[str, list[Mapping[str, Any]]] = {}
    for result in mapped_results(results):
        by_conn.setdefault(str(result.get("conn_id")), []).append(result)
    ids = tuple(dict.fromkeys([*(conn_ids or []), *by_conn]))
    healthy: list[str] = []
    unhealthy: list[str] = []
    warnings: list[str] = []
    paths: list[str] = []
    checked = 0
    for conn_id in ids:
        found = by_conn.get(conn_id)
        if not found:
            unhealthy.append(f"{conn_id}: no health record: its check task failed (see that task's log)")
            continue
        for result in found:
            if result.get("path") and str(result["path"]) not in paths:
                paths.append(str(result["path"]))
            if "checked" in result:  # a per-connection result
                checked += int(result.get("checked") or 0)
                healthy.extend(consent_label(conn_id, str(c)) for c in result.get("healthy") or [])
                unhealthy.extend(str(line) for line in result.get("unhealthy") or [])
                warnings.extend(str(w) for w in result.get("warnings") or [])
                continue
            checked += 1
            label = consent_label(conn_id, str(result.get("consent_id") or DEFAULT_CONSENT_ID))
            warnings.extend(f"{label}: {warning}" for warning in result.get("warnings") or [])
            if result.get("healthy"):
                healthy.append(label)
            else:
                line = result.get("summary") or f"{label}: {result.get('state')}: {result.get('message')}"
                unhealthy.append(str(line))
    return HealthSummary(ids, tuple(healthy), tuple(unhealthy), tuple(warnings), tuple(paths), checked)


__all__ = [
    "HEALTH_DATASET",
    "IDLE_LAPSE_DAYS",
    "IDLE_WARN_DAYS",
    "NEEDS_AUTHORIZATION",
    "ConsentState",
    "ConsentStatus",
    "HealthSummary",
    "authorize_hint",
    "check_connection_health",
    "check_consent",
    "consent_label",
    "consent_status",
    "days_until_idle_lapse",
    "health_record",
    "health_record_path",
    "idle_days",
    "land_health_records",
    "summarize_health",
]
