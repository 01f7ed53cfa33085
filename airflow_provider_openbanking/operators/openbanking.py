"""Operators that land Flinks Open Banking (FDX 5) data in object storage, one per endpoint.

Every operator is a thin wrapper over :class:`~airflow_provider_openbanking.hooks.openbanking.OpenBankingHook`
(auth, retries and pagination live there) and :mod:`~airflow_provider_openbanking.landing` (paths and
atomic JSON Lines writes). What they add: the run's data interval, fan-out over accounts, skipping
704/705 accounts, masking full account numbers, progress logs, a small XCom summary and lineage.

The XCom return value (never records, never tokens)::

    {"dataset": "transactions", "conn_id": "openbanking_default",
     "interval_start": "2026-11-19T00:00:00+00:00", "interval_end": "2026-11-20T00:00:00+00:00",
     "query_start": "2026-11-05", "query_end": "2026-11-19",      # transactions/statements only
     "paths": ["file:///…/account_id=acc-1.jsonl", …],
     "records": 812, "pages": 10,
     "accounts": {"acc-1": {"records": 406, "pages": 5, "path": "file:///…"}, …},  # per-account datasets
     "skipped": {"acc-9": "704 Account type not supported"},
     "files": [...]}                                                # statement files (statements)
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_openbanking.exceptions import AccountUnavailableError, ConsentRequiredError
from airflow_provider_openbanking.fdx import mask_account_number, mask_account_numbers
from airflow_provider_openbanking.landing import (
    AtomicWriter,
    JsonLinesWriter,
    Layout,
    check_destination_writable,
    lineage_dataset,
)
from airflow_provider_openbanking.pagination import PageStats

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

# The hook (and requests, tenacity) is imported at execute time, not when a DAG file is parsed.
DEFAULT_CONN_ID = "openbanking_default"
DEFAULT_LOOKBACK = dt.timedelta(days=14)
DEFAULT_MAX_WORKERS = 4
STATEMENT_FILES_DATASET = "statement_files"
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/tiff": ".tiff",
}

DateArg = dt.datetime | dt.date | str | None


def _to_utc(value: dt.datetime | dt.date | str, name: str) -> dt.datetime:
    """A datetime in UTC from a datetime (naive = UTC), a date (midnight UTC) or an ISO string."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                dt.date.fromisoformat(text)
                if len(text) == 10
                else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            )
        except ValueError:
            raise ValueError(f"{name}={value!r} is not an ISO date or datetime") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    raise ValueError(f"{name} must be a datetime, a date or an ISO string, got {type(value).__name__}")


def _literal(value: Any) -> bool:
    """A date or a string that is not a Jinja template: checkable when the DAG is parsed."""
    if isinstance(value, str):
        return bool(value) and "{{" not in value and "{%" not in value
    return isinstance(value, dt.date)


def _last_day(start: dt.datetime, end: dt.datetime) -> dt.date:
    """The last calendar day (UTC) of the half-open interval [start, end), for the API's
    inclusive ``endTime``; never before ``start``'s day."""
    return max(start.date(), (end - dt.timedelta(microseconds=1)).date())


@dataclass
class _AccountResult:
    records: int = 0
    pages: int = 0
    path: str | None = None


@dataclass
class _Outcome:
    """What one execution landed, skipped and failed (thread-safe)."""

    paths: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    accounts: dict[str, _AccountResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    records: int = 0
    pages: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def landed(
        self, path: ObjectStoragePath, records: int, pages: int, account_id: str | None = None
    ) -> None:
        with self.lock:
            self.paths.append(str(path))
            self.records += records
            self.pages += pages
            if account_id is not None:
                self.accounts[account_id] = _AccountResult(records, pages, str(path))

    def landed_file(self, path: ObjectStoragePath) -> None:
        with self.lock:
            self.files.append(str(path))


class _OpenBankingBaseOperator(BaseOperator):
    """Shared behaviour of the Open Banking operators (not for direct use).

    :param openbanking_conn_id: the ``openbanking`` connection. (templated)
    :param destination: where files land: an ``ObjectStoragePath`` or a URL (``file://``, ``s3://``,
        ``gs://``…); default ``[openbanking] landing_destination`` or ``file://$AIRFLOW_HOME/openbanking``.
        (templated)
    :param start_time: start of the data interval (datetime, date or ISO string); default the run's
        ``data_interval_start``. (templated)
    :param end_time: end of the data interval (exclusive); default the run's ``data_interval_end``.
        When the run has no interval (manual runs, or start == end as with ``CronTriggerTimetable``)
        the day before the logical date is used, and logged. (templated)
    :param include_full_account_number: land full ``accountNumber`` values (and payment-network
        ``identifier``) instead of masking them to their last four characters.
    """

    dataset: ClassVar[str] = ""
    #: Datasets stored per account: one file per account.
    per_account: ClassVar[bool] = False

    template_fields: Sequence[str] = ("openbanking_conn_id", "destination", "start_time", "end_time")
    ui_color = "#d6ecf3"
    ui_fgcolor = "#0b3b4f"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        include_full_account_number: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.openbanking_conn_id = openbanking_conn_id
        self.destination = destination
        self.start_time = start_time
        self.end_time = end_time
        self.include_full_account_number = include_full_account_number
        self._landed_paths: list[str] = []
        self._landed_files: list[str] = []
        if _literal(start_time) and _literal(end_time):  # templated ones are checked at run time
            start, end = _to_utc(start_time, "start_time"), _to_utc(end_time, "end_time")  # type: ignore[arg-type]
            if start > end:
                raise ValueError(f"start_time {start.isoformat()} is after end_time {end.isoformat()}")

    # -- the data interval -----------------------------------------------------------------------

    def resolve_interval(self, context: Context) -> tuple[dt.datetime, dt.datetime]:
        """``[start, end)`` of this run in UTC (see the class docstring for the defaults)."""
        start_raw: Any = self.start_time if self.start_time not in (None, "") else None
        end_raw: Any = self.end_time if self.end_time not in (None, "") else None
        explicit = start_raw is not None and end_raw is not None
        if start_raw is None:
            start_raw = context.get("data_interval_start")
        if end_raw is None:
            end_raw = context.get("data_interval_end")
        start = _to_utc(start_raw, "start_time") if start_raw is not None else None
        end = _to_utc(end_raw, "end_time") if end_raw is not None else None
        if start is None or end is None or (start == end and not explicit):
            anchor_raw = context.get("logical_date") or end or start or dt.datetime.now(dt.timezone.utc)
            anchor = _to_utc(anchor_raw, "logical_date")
            end = dt.datetime(anchor.year, anchor.month, anchor.day, tzinfo=dt.timezone.utc)
            start = end - dt.timedelta(days=1)
            self.log.info(
                "The run has no data interval: using the day before the logical date, [%s, %s)",
                start.isoformat(),
                end.isoformat(),
            )
        if start > end:
            raise ValueError(f"start_time {start.isoformat()} is after end_time {end.isoformat()}")
        return start, end

    # -- execution -------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        start, end = self.resolve_interval(context)
        # Before any API call: a destination that cannot be written fails the task once, at once.
        destination = check_destination_writable(self.destination)
        layout = Layout(destination, self.dataset, self.openbanking_conn_id, start, end)
        outcome = _Outcome()
        self._landed_paths, self._landed_files = outcome.paths, outcome.files
        summary: dict[str, Any] = {
            "dataset": self.dataset,
            "conn_id": self.openbanking_conn_id,
            "interval_start": start.isoformat(),
            "interval_end": end.isoformat(),
        }
        summary.update(self.query_window(start, end))
        self.log.info(
            "Landing %s of connection %r for [%s, %s) under %s",
            self.dataset,
            self.openbanking_conn_id,
            start.isoformat(),
            end.isoformat(),
            destination,
        )
        from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

        hook = OpenBankingHook(self.openbanking_conn_id)
        started = time.monotonic()
        try:
            self.land(hook, layout, outcome, start, end)
        except ConsentRequiredError as exc:
            raise self._consent_failure(exc, outcome) from exc
        finally:
            hook.close()
        summary.update(self._summary(outcome))
        self.log.info(
            "%s: %d record(s) in %d page(s), %d file(s) in %.1f s%s",
            self.dataset,
            outcome.records,
            outcome.pages,
            len(outcome.paths) + len(outcome.files),
            time.monotonic() - started,
            f"; skipped {len(outcome.skipped)} account(s)" if outcome.skipped else "",
        )
        if outcome.failed:
            details = "; ".join(f"{acc}: {reason}" for acc, reason in sorted(outcome.failed.items()))
            raise AirflowException(
                f"{self.dataset}: {len(outcome.failed)} account(s) failed ({details}). "
                f"The other accounts' data landed ({len(outcome.paths)} file(s))."
            )
        return summary

    def query_window(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        """Extra XCom keys describing the API query (transactions/statements)."""
        return {}

    def land(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        raise NotImplementedError

    def _summary(self, outcome: _Outcome) -> dict[str, Any]:
        out: dict[str, Any] = {
            "paths": sorted(outcome.paths),
            "records": outcome.records,
            "pages": outcome.pages,
        }
        if self.per_account:
            out["accounts"] = {
                acc: {"records": r.records, "pages": r.pages, "path": r.path}
                for acc, r in sorted(outcome.accounts.items())
            }
        out["skipped"] = dict(sorted(outcome.skipped.items()))
        return out

    def _consent_failure(self, exc: ConsentRequiredError, outcome: _Outcome) -> AirflowFailException:
        kept = len(outcome.paths) + len(outcome.files)
        return AirflowFailException(
            f"{self.dataset}: the customer's consent for connection {self.openbanking_conn_id!r} is missing "
            f"or revoked, so the customer must re-authorize (run `airflow-openbanking authorize --conn-id "
            f"{self.openbanking_conn_id}` or store a new refresh token in the connection); retrying cannot "
            f"help. {kept} file(s) landed before this stay in place. Cause: {exc}"
        )

    # -- records ---------------------------------------------------------------------------------

    def prepare(self, record: Mapping[str, Any], account_id: str | None = None) -> Mapping[str, Any]:
        """A record as it lands: full account numbers masked unless asked otherwise."""
        if self.include_full_account_number:
            return record
        return mask_account_numbers(record)

    def _progress(self, label: str, started: float) -> Callable[[PageStats], None]:
        def on_page(stats: PageStats) -> None:
            of = f" of {stats.total_elements}" if stats.total_elements is not None else ""
            self.log.info(
                "%s: page %d, %d record(s)%s so far, %.1f s elapsed",
                label,
                stats.pages,
                stats.records,
                of,
                time.monotonic() - started,
            )

        return on_page

    def land_records(
        self,
        outcome: _Outcome,
        path: ObjectStoragePath,
        label: str,
        fetch: Callable[[PageStats, Callable[[PageStats], None]], Iterable[Mapping[str, Any]]],
        account_id: str | None = None,
    ) -> None:
        """Stream what ``fetch(stats, on_page)`` yields into ``path`` and record the result."""
        started = time.monotonic()
        stats = PageStats()
        with JsonLinesWriter(path) as writer:
            for record in fetch(stats, self._progress(label, started)):
                writer.write_record(self.prepare(record, account_id))
        outcome.landed(path, writer.records, stats.pages, account_id)
        self.log.info(
            "%s: %d record(s) in %d page(s) in %.1f s -> %s",
            label,
            writer.records,
            stats.pages,
            time.monotonic() - started,
            path,
        )

    def land_one(
        self,
        outcome: _Outcome,
        path: ObjectStoragePath,
        label: str,
        fetch: Callable[[], Mapping[str, Any]],
        account_id: str | None = None,
    ) -> None:
        """Land the single object ``fetch()`` returns (one request, one line)."""

        def single(stats: PageStats, on_page: Callable[[PageStats], None]) -> Iterator[Mapping[str, Any]]:
            record = fetch()
            stats.pages, stats.records = 1, 1
            yield record

        self.land_records(outcome, path, label, single, account_id)

    # -- OpenLineage -----------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Report every landed file (JSON Lines and statement files) as an output dataset.

        Returns None when the OpenLineage provider is not installed.
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        outputs = []
        for path in sorted([*self._landed_paths, *self._landed_files]):
            namespace, name = lineage_dataset(path)
            outputs.append(Dataset(namespace=namespace, name=name))
        return OperatorLineage(outputs=outputs)


class _AccountsArgOperator(_OpenBankingBaseOperator):
    """An operator with ``account_ids`` and ``max_workers``.

    :param account_ids: accounts to fetch (a list or a comma-separated string); ``None`` (default)
        means every account of the consent. (templated)
    :param max_workers: accounts fetched concurrently (threads sharing one hook).
    """

    template_fields: Sequence[str] = (*_OpenBankingBaseOperator.template_fields, "account_ids")

    def __init__(
        self,
        *,
        account_ids: Sequence[str] | str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.account_ids = account_ids
        self.max_workers = max_workers

    def selected_account_ids(self) -> list[str] | None:
        """The rendered ``account_ids`` as a list, or None for every account."""
        ids = self.account_ids
        if ids is None or ids == "":
            return None
        if isinstance(ids, str):
            ids = [part.strip() for part in ids.split(",") if part.strip()]
        return list(dict.fromkeys(str(a) for a in ids))

    def fan_out(self, outcome: _Outcome, accounts: Sequence[str], work: Callable[[str], Any]) -> list[Any]:
        """Run ``work(account_id)`` for every account, ``max_workers`` at a time; return the results
        in account order (None for an account that did not finish).

        704/705 (:class:`AccountUnavailableError`) skips the account; any other error is recorded and
        fails the task once every other account is done; a lost consent cancels what has not started
        and is raised at once.
        """
        results: list[Any] = [None] * len(accounts)
        if not accounts:
            return results
        consent_error: ConsentRequiredError | None = None
        workers = min(self.max_workers, len(accounts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openbanking") as pool:
            futures: dict[Future[Any], int] = {pool.submit(work, acc): i for i, acc in enumerate(accounts)}
            for future in as_completed(futures):
                index = futures[future]
                account_id = accounts[index]
                if future.cancelled():
                    continue
                try:
                    results[index] = future.result()
                except AccountUnavailableError as exc:
                    reason = " ".join(str(x) for x in (exc.code, exc.api_message) if x) or str(exc)
                    self.log.warning("%s: skipping account %s (%s)", self.dataset, account_id, reason)
                    with outcome.lock:
                        outcome.skipped[account_id] = reason
                except ConsentRequiredError as exc:
                    if consent_error is None:
                        consent_error = exc
                        for other in futures:
                            other.cancel()
                except Exception as exc:
                    self.log.error("%s: account %s failed: %s", self.dataset, account_id, exc)
                    with outcome.lock:
                        outcome.failed[account_id] = f"{type(exc).__name__}: {exc}"
        if consent_error is not None:
            raise consent_error
        return results


class _PerAccountOperator(_AccountsArgOperator):
    """One endpoint call (or pagination) per account, one landed file per account."""

    per_account = True

    def resolve_accounts(self, hook: OpenBankingHook) -> list[str]:
        """The given accounts, or every account of the consent (``/accounts``, lightweight)."""
        selected = self.selected_account_ids()
        if selected is not None:
            # Fail fast on a lost consent (and warm the shared token) before any thread starts.
            hook.get_access_token()
            return selected
        ids = [str(a["accountId"]) for a in hook.iter_accounts("lightweight") if a.get("accountId")]
        self.log.info("The consent covers %d account(s)", len(ids))
        return ids

    def land(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        accounts = self.resolve_accounts(hook)
        self.fan_out(outcome, accounts, lambda acc: self.land_account(hook, layout, outcome, acc, start, end))

    def land_account(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        account_id: str,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# The operators
# ---------------------------------------------------------------------------------------------


class OpenBankingProvidersOperator(_OpenBankingBaseOperator):
    """Land the Data Providers the recipient is registered with (``GET /api/v1/providers``).

    Uses the client-credentials token: no customer consent is needed. One file,
    ``providers/conn_id=…/interval=…/providers.jsonl``.
    """

    dataset = "providers"

    def land(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        def fetch(stats: PageStats, on_page: Callable[[PageStats], None]) -> list[dict[str, Any]]:
            providers = hook.get_providers()
            stats.pages, stats.records = 1, len(providers)
            return providers

        self.land_records(outcome, layout.records_file(), "providers", fetch)


class OpenBankingAccountsOperator(_AccountsArgOperator):
    """Land the consent's accounts (``/accounts``, or ``/accounts/{id}`` per account).

    :param result_type: ``lightweight`` (default) or ``details`` (balances, full account number --
        masked unless ``include_full_account_number`` -- and holdings for investment accounts).
    :param account_ids: with ``result_type="details"``, each account is read from
        ``/accounts/{accountId}`` (``max_workers`` at a time; 704/705 accounts are skipped and
        reported); otherwise ``/accounts`` is paged through (filtered by ``accountIds``). (templated)

    One file for all the accounts: ``accounts/conn_id=…/interval=…/accounts.jsonl``.
    """

    dataset = "accounts"
    template_fields: Sequence[str] = (*_AccountsArgOperator.template_fields, "result_type")

    def __init__(self, *, result_type: str = "lightweight", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if _literal(result_type) and result_type not in ("lightweight", "details"):
            raise ValueError(f"result_type must be 'lightweight' or 'details', got {result_type!r}")
        self.result_type = result_type

    def land(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        if self.result_type not in ("lightweight", "details"):
            raise ValueError(f"result_type must be 'lightweight' or 'details', got {self.result_type!r}")
        selected = self.selected_account_ids()
        path = layout.records_file()
        if selected is None or self.result_type == "lightweight":
            self.land_records(
                outcome,
                path,
                f"accounts ({self.result_type})",
                lambda stats, on_page: hook.iter_accounts(
                    self.result_type, selected, stats=stats, on_page=on_page
                ),
            )
            return
        hook.get_access_token()  # fail fast on a lost consent before threads start
        found = self.fan_out(outcome, selected, hook.get_account)

        def fetched(stats: PageStats, on_page: Callable[[PageStats], None]) -> Iterator[dict[str, Any]]:
            for account in found:
                if account is not None:
                    stats.pages += 1
                    stats.records += 1
                    yield account

        self.land_records(outcome, path, "accounts (details, by id)", fetched)


class OpenBankingTransactionsOperator(_PerAccountOperator):
    """Land each account's transactions (``/accounts/{accountId}/transactions``), one file per account.

    The query covers ``[start_time - lookback, end_time)`` in whole days (the API filters on the
    posted date, both ends inclusive), so transactions that post late -- pending ones post within
    ``lookback`` -- are picked up by a later run; consumers de-duplicate on ``transactionId``. The
    file is still keyed by the run's interval, so a rerun replaces it.

    :param lookback: how far before ``start_time`` to query (``timedelta`` or days; default 14 days).
    """

    dataset = "transactions"

    def __init__(self, *, lookback: dt.timedelta | float = DEFAULT_LOOKBACK, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lookback = lookback if isinstance(lookback, dt.timedelta) else dt.timedelta(days=lookback)
        if self.lookback < dt.timedelta(0):
            raise ValueError(f"lookback must not be negative, got {lookback!r}")

    def query_window(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        return {
            "query_start": (start - self.lookback).date().isoformat(),
            "query_end": _last_day(start, end).isoformat(),
        }

    def land_account(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        account_id: str,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        window = self.query_window(start, end)
        self.land_records(
            outcome,
            layout.records_file(account_id),
            f"transactions {account_id}",
            lambda stats, on_page: hook.iter_transactions(
                account_id, window["query_start"], window["query_end"], stats=stats, on_page=on_page
            ),
            account_id,
        )


class OpenBankingStatementsOperator(_PerAccountOperator):
    """Land each account's statement list (``/accounts/{accountId}/statements``) and, with
    ``download=True`` (default), the statement files (``/statements/{statementId}``).

    Statements dated within the interval's days are listed, one JSON Lines file per account; files
    land at ``statement_files/conn_id=…/interval=…/account_id=…/<statementId>.pdf``, streamed and
    written atomically.

    :param download: also download each statement's file.
    :param accept: the file type asked for (``application/pdf`` by default, or ``image/*``).
    """

    dataset = "statements"

    def __init__(self, *, download: bool = True, accept: str = "application/pdf", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.download = download
        self.accept = accept

    def query_window(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        return {"query_start": start.date().isoformat(), "query_end": _last_day(start, end).isoformat()}

    def _summary(self, outcome: _Outcome) -> dict[str, Any]:
        out = super()._summary(outcome)
        out["files"] = sorted(outcome.files)
        return out

    def land_account(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        account_id: str,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        window = self.query_window(start, end)

        def fetch(stats: PageStats, on_page: Callable[[PageStats], None]) -> Iterator[dict[str, Any]]:
            for statement in hook.iter_statements(
                account_id, window["query_start"], window["query_end"], stats=stats, on_page=on_page
            ):
                if self.download and statement.get("statementId"):
                    self._download(hook, layout, outcome, account_id, str(statement["statementId"]))
                yield statement

        self.land_records(
            outcome, layout.records_file(account_id), f"statements {account_id}", fetch, account_id
        )

    def _download(
        self, hook: OpenBankingHook, layout: Layout, outcome: _Outcome, account_id: str, statement_id: str
    ) -> None:
        extension = _EXTENSIONS.get(self.accept.split(";")[0].strip().lower(), ".bin")
        path = layout.blob_file(STATEMENT_FILES_DATASET, account_id, statement_id, extension)
        started = time.monotonic()
        with AtomicWriter(path) as writer:
            for chunk in hook.download_statement(account_id, statement_id, self.accept):
                writer.write(chunk)
        outcome.landed_file(path)
        self.log.info(
            "statement %s of %s: %d byte(s) in %.1f s -> %s",
            statement_id,
            account_id,
            writer.bytes_written,
            time.monotonic() - started,
            path,
        )


class OpenBankingAccountContactOperator(_PerAccountOperator):
    """Land each account's holders, emails, addresses and telephones (``/accounts/{accountId}/contact``).

    One file per account holding one record, tagged with ``accountId``.
    """

    dataset = "contacts"

    def land_account(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        account_id: str,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        self.land_one(
            outcome,
            layout.records_file(account_id),
            f"contact {account_id}",
            lambda: {"accountId": account_id, **hook.get_account_contact(account_id)},
            account_id,
        )


class OpenBankingPaymentNetworksOperator(_PerAccountOperator):
    """Land each account's payment networks (``/accounts/{accountId}/payment-networks``).

    Records are tagged with ``accountId``. Their ``identifier`` is the full account number, so it is
    masked like ``accountNumber`` unless ``include_full_account_number=True``. Accounts without
    payment networks (704) are skipped and reported.
    """

    dataset = "payment_networks"

    def prepare(self, record: Mapping[str, Any], account_id: str | None = None) -> Mapping[str, Any]:
        tagged = {"accountId": account_id, **record} if account_id is not None else dict(record)
        if self.include_full_account_number:
            return tagged
        masked = mask_account_numbers(tagged)
        if "identifier" in masked:
            masked["identifier"] = mask_account_number(masked["identifier"])
        return masked

    def land_account(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        account_id: str,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        self.land_records(
            outcome,
            layout.records_file(account_id),
            f"payment networks {account_id}",
            lambda stats, on_page: hook.iter_payment_networks(account_id, stats=stats, on_page=on_page),
            account_id,
        )


class OpenBankingCustomerOperator(_OpenBankingBaseOperator):
    """Land the customer who gave consent (``/customers/current``): one file, one record."""

    dataset = "customer"

    def land(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        self.land_one(outcome, layout.records_file(), "customer", hook.get_customer)


class OpenBankingHoldingsOperator(_AccountsArgOperator):
    """Land the holdings of the investment accounts (``holdings[]`` of ``/accounts?resultType=details``).

    One file for all accounts, each holding tagged with its ``accountId``:
    ``holdings/conn_id=…/interval=…/holdings.jsonl``.
    """

    dataset = "holdings"

    def land(
        self,
        hook: OpenBankingHook,
        layout: Layout,
        outcome: _Outcome,
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        selected = self.selected_account_ids()
        self.land_records(
            outcome,
            layout.records_file(),
            "holdings",
            lambda stats, on_page: hook.iter_holdings(selected, stats=stats, on_page=on_page),
        )


__all__ = [
    "OpenBankingAccountContactOperator",
    "OpenBankingAccountsOperator",
    "OpenBankingCustomerOperator",
    "OpenBankingHoldingsOperator",
    "OpenBankingPaymentNetworksOperator",
    "OpenBankingProvidersOperator",
    "OpenBankingStatementsOperator",
    "OpenBankingTransactionsOperator",
]
