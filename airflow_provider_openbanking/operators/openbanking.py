"""Operators that land Flinks Open Banking (FDX 5) data in object storage, one per endpoint.

Every operator is a thin declaration of what to fetch per consent and per account and where it
lands. Auth, retries and pagination live in
:class:`~airflow_provider_openbanking.hooks.openbanking.OpenBankingHook`; paths and atomic writes in
:mod:`~airflow_provider_openbanking.landing`; working through many consents -- the bounded pool
over consents x accounts, per-consent isolation, resume on retry, the bounded summary -- in
:mod:`~airflow_provider_openbanking.batch`. What the operators add: the run's data interval, the
endpoint calls, masking full account numbers, progress logs and lineage.

Which consents a task covers (every per-customer operator):

- default: the connection's ``default`` consent (its ``refresh_token`` extra), as before;
- ``consent_ids=[…]``: those consents of the connection (templated);
- ``shard_index=k, shard_count=n``: every consent of the connection whose stable hash falls in
  shard ``k`` of ``n`` (how the example DAGs cover thousands of consents with a few tasks).

The XCom return value is small (never records, never tokens)::

    {"dataset": "transactions", "conn_id": "openbanking_default",
     "interval_start": "2026-11-19T00:00:00+00:00", "interval_end": "2026-11-20T00:00:00+00:00",
     "query_start": "2026-11-05", "query_end": "2026-11-19",      # transactions/statements only
     "file_format": "jsonl.gz",
     "paths": ["file:///…/account_id=acc-1.jsonl.gz", …],
     "records": 812, "pages": 10,
     "dropped": 0,   # records the server sent unasked (other accounts, dates outside the window)
     "consents": {"selected": 300, "landed": 298, "resumed": 0, "failed": 2},
     "counts": {"files": 1490, "blobs": 0, "records": …, "pages": …, "dropped": 0,
                "accounts_skipped": 3, …},
     "failed": {"cust-17": "602", "cust-90": "transient_503"},     # at most 50 ids
     "manifest": "file:///…/_manifests/transactions/…/shard=0003-of-0034.jsonl",   # batches only
     # and, when the task covers exactly one consent, the details as before:
     "consent_id": "default", "paths": ["file:///…/account_id=acc-1.jsonl", …],
     "accounts": {"acc-1": {"records": 406, "pages": 5, "dropped": 0, "path": "file:///…"}, …},
     "skipped": {"acc-9": "704 Account type not supported"},
     "files": [...]}                                                # statement files (statements)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from airflow_provider_openbanking.batch import (
    DEFAULT_CONSENT_ID,
    BatchResult,
    BatchRunner,
    ConsentOutcome,
    Landed,
    check_shard,
    failure_message,
    parse_consent_ids,
    select_consents,
    summarize,
)
from airflow_provider_openbanking.exceptions import AccountUnavailableError, ConnectionConfigError
from airflow_provider_openbanking.fdx import mask_account_number, mask_account_numbers
from airflow_provider_openbanking.landing import (
    DEFAULT_FILE_FORMAT,
    FILE_FORMATS,
    AtomicWriter,
    JsonLinesWriter,
    Layout,
    check_destination_writable,
    iter_records,
    lineage_dataset,
    open_records_writer,
    require_pyarrow,
    resolve_file_format,
)
from airflow_provider_openbanking.operators._batch_args import (
    ACCOUNT_IDS_DOC,
    ACCOUNTS_FROM_LANDING_DOC,
    CONSENTS_DOC,
    operator_doc,
    shared_arguments,
)
from airflow_provider_openbanking.pagination import PageStats

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

# The hook (and requests) is imported at execute time, not when a DAG file is parsed.
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


#: Landed files listed one by one in OpenLineage; a larger batch reports its dataset folders.
MAX_LINEAGE_FILES = 200


@dataclass
class ConsentTask:
    """One consent inside one task instance: what a batched operator's methods are handed."""

    consent_id: str
    hook: OpenBankingHook
    layout: Layout
    outcome: ConsentOutcome
    start: dt.datetime
    end: dt.datetime


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


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
    :param file_format: ``jsonl.gz`` (gzip JSON Lines), ``jsonl`` or ``parquet`` (typed columns;
        needs the ``[parquet]`` extra); default ``[openbanking] file_format``, else ``jsonl.gz``.
        A rerun in another format replaces the window's file
        (see :mod:`~airflow_provider_openbanking.landing`). (templated)
    """

    dataset: ClassVar[str] = ""
    #: Datasets stored per account: one file per account.
    per_account: ClassVar[bool] = False

    template_fields: Sequence[str] = (
        "openbanking_conn_id",
        "destination",
        "start_time",
        "end_time",
        "file_format",
    )
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
        file_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.openbanking_conn_id = openbanking_conn_id
        self.destination = destination
        self.start_time = start_time
        self.end_time = end_time
        self.include_full_account_number = include_full_account_number
        self.file_format = file_format
        self._file_format = DEFAULT_FILE_FORMAT
        if _literal(file_format):  # a templated one is checked at run time
            resolve_file_format(file_format)
        self._landed_paths: list[str] = []
        self._landed_files: list[str] = []
        #: Progress per page at INFO (one consent) or DEBUG (a batch: one line per file is plenty).
        self._page_logs = True
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

    def query_window(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        """Extra XCom keys describing the API query (transactions/statements)."""
        return {}

    def _checked_file_format(self) -> str:
        """The rendered ``file_format`` (or the configured one), usable here: a wrong value or a
        missing pyarrow ends the task before any request (retrying cannot fix either)."""
        try:
            file_format = resolve_file_format(self.file_format)
            if file_format == "parquet":
                require_pyarrow()
        except (ValueError, ImportError) as exc:
            raise AirflowFailException(f"{self.dataset}: {exc}") from None
        self._file_format = file_format
        return file_format

    def _header(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "dataset": self.dataset,
            "conn_id": self.openbanking_conn_id,
            "interval_start": start.isoformat(),
            "interval_end": end.isoformat(),
            "file_format": self._file_format,
        }
        summary.update(self.query_window(start, end))
        return summary

    # -- records ---------------------------------------------------------------------------------

    def prepare(self, record: Mapping[str, Any], account_id: str | None = None) -> Mapping[str, Any]:
        """A record as it lands: full account numbers masked unless asked otherwise."""
        if self.include_full_account_number:
            return record
        return mask_account_numbers(record)

    def _progress(self, label: str, started: float) -> Callable[[PageStats], None]:
        level = logging.INFO if self._page_logs else logging.DEBUG

        def on_page(stats: PageStats) -> None:
            of = f" of {stats.total_elements}" if stats.total_elements is not None else ""
            self.log.log(
                level,
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
        path: ObjectStoragePath,
        label: str,
        fetch: Callable[[PageStats, Callable[[PageStats], None]], Iterable[Mapping[str, Any]]],
        account_id: str | None = None,
    ) -> Landed:
        """Stream what ``fetch(stats, on_page)`` yields into ``path``; return what landed."""
        started = time.monotonic()
        stats = PageStats()
        with open_records_writer(path, self.dataset, account_id=account_id) as writer:
            for record in fetch(stats, self._progress(label, started)):
                writer.write_record(self.prepare(record, account_id))
        self.log.info(
            "%s: %d record(s) in %d page(s) in %.1f s -> %s%s",
            label,
            writer.records,
            stats.pages,
            time.monotonic() - started,
            path,
            f" ({stats.dropped} record(s) the server sent unasked left out)" if stats.dropped else "",
        )
        return Landed(str(path), account_id, writer.records, stats.pages, dropped=stats.dropped)

    def land_one(
        self,
        path: ObjectStoragePath,
        label: str,
        fetch: Callable[[], Mapping[str, Any]],
        account_id: str | None = None,
    ) -> Landed:
        """Land the single object ``fetch()`` returns (one request, one line)."""

        def single(stats: PageStats, on_page: Callable[[PageStats], None]) -> Iterator[Mapping[str, Any]]:
            record = fetch()
            stats.pages, stats.records = 1, 1
            yield record

        return self.land_records(path, label, single, account_id)

    # -- OpenLineage -----------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Report every landed file (JSON Lines and statement files) as an output dataset; a batch
        of more than :data:`MAX_LINEAGE_FILES` files reports each dataset's folder of the
        connection instead.

        Returns None when the OpenLineage provider is not installed.
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        paths = sorted([*self._landed_paths, *self._landed_files])
        if len(paths) > MAX_LINEAGE_FILES:
            paths = sorted({p.split("/consent_id=", 1)[0] for p in paths})
        outputs = []
        for path in paths:
            namespace, name = lineage_dataset(path)
            outputs.append(Dataset(namespace=namespace, name=name))
        return OperatorLineage(outputs=outputs)


class OpenBankingProvidersOperator(_OpenBankingBaseOperator):
    """Land the Data Providers the recipient is registered with (``GET /api/v1/providers``).

    Uses the client-credentials token: no customer consent is needed. One file,
    ``providers/conn_id=…/interval=…/providers.jsonl``.

    :param openbanking_conn_id: the ``openbanking`` connection. (templated)
    :param destination: where the file lands (see :class:`OpenBankingTransactionsOperator`). (templated)
    :param start_time: start of the interval the file is filed under. (templated)
    :param end_time: end of that interval. (templated)
    """

    dataset = "providers"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        start, end = self.resolve_interval(context)
        file_format = self._checked_file_format()
        # Before any API call: a destination that cannot be written fails the task once, at once.
        destination = check_destination_writable(self.destination)
        layout = Layout(
            destination, self.dataset, self.openbanking_conn_id, start, end, file_format=file_format
        )
        from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

        hook = OpenBankingHook(self.openbanking_conn_id)

        def fetch(stats: PageStats, on_page: Callable[[PageStats], None]) -> list[dict[str, Any]]:
            providers = hook.get_providers()
            stats.pages, stats.records = 1, len(providers)
            return providers

        try:
            landed = self.land_records(layout.records_file(), "providers", fetch)
        finally:
            hook.close()
        self._landed_paths = [landed.path]
        return {
            **self._header(start, end),
            "paths": [landed.path],
            "records": landed.records,
            "pages": landed.pages,
            "dropped": landed.dropped,
            "skipped": {},
        }


class _ConsentBatchOperator(_OpenBankingBaseOperator):
    """An operator that lands a customer dataset for one consent or a batch of consents.

    :param consent_ids: the consents of the connection to cover (a list, a JSON list or a
        comma-separated string). (templated)
    :param shard_index: with ``shard_count``: cover the connection's consents whose stable hash
        falls in shard ``shard_index`` (0-based) of ``shard_count``. (templated)
    :param shard_count: number of shards the connection's consents are split into. (templated)
    :param max_workers: threads working across consents x accounts in this task (they share the
        connection's client token, HTTP pool and rate limit).
    :param resume: on a retry of the same run, keep what an earlier try landed (batches only).
    """

    template_fields: Sequence[str] = (
        *_OpenBankingBaseOperator.template_fields,
        "consent_ids",
        "shard_index",
        "shard_count",
    )

    def __init__(
        self,
        *,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.consent_ids = consent_ids
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.max_workers = max_workers
        self.resume = resume
        if not any(_templated(v) for v in (consent_ids, shard_index, shard_count)):
            self._selection()  # a bad combination fails when the DAG is parsed

    # -- which consents --------------------------------------------------------------------------

    def _selection(self) -> tuple[list[str] | None, tuple[int, int] | None]:
        ids = parse_consent_ids(self.consent_ids)
        shard = check_shard(self.shard_index, self.shard_count)
        if ids is not None and shard is not None:
            raise ValueError("give consent_ids or shard_index/shard_count, not both")
        return ids, shard

    @property
    def batched(self) -> bool:
        """Whether consents were chosen explicitly (a list or a shard) rather than by default."""
        ids, shard = self._selection()
        return ids is not None or shard is not None

    def batch_name(self) -> str:
        """The name of this task's manifest: its shard, or a digest of its consent list."""
        ids, shard = self._selection()
        if shard is not None:
            return f"shard={shard[0]:04d}-of-{shard[1]:04d}"
        if ids is not None:
            return "consents=" + hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
        return f"consent_id={DEFAULT_CONSENT_ID}"

    def resolve_consents(self, hook: OpenBankingHook) -> list[str]:
        ids, shard = self._selection()
        if ids is not None:
            return ids
        if shard is not None:
            selected = select_consents(hook.consent_ids(), shard=shard)
            self.log.info(
                "Shard %d of %d of connection %r: %d consent(s)",
                shard[0],
                shard[1],
                self.openbanking_conn_id,
                len(selected),
            )
            return selected
        return [hook.consent_id]

    # -- what subclasses declare -----------------------------------------------------------------

    def plan(self, task: ConsentTask) -> Sequence[str | None]:
        """The consent's units of work: account ids, or ``[None]`` for one file per consent."""
        return [None]

    def land_unit(self, task: ConsentTask, unit: str | None) -> None:
        """Land one unit for the consent; ``task.outcome.add()`` each file."""
        raise NotImplementedError

    # -- execution -------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        start, end = self.resolve_interval(context)
        file_format = self._checked_file_format()
        # Before any API call: a destination that cannot be written fails the task once, at once.
        destination = check_destination_writable(self.destination)
        layout = Layout(
            destination, self.dataset, self.openbanking_conn_id, start, end, file_format=file_format
        )
        from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

        hook = OpenBankingHook(self.openbanking_conn_id)
        batched = self.batched
        try:
            try:
                consents = self.resolve_consents(hook)
            except (AirflowNotFoundException, ConnectionConfigError, ValueError) as exc:
                # A connection that does not exist or is malformed stays so: no retry can help.
                raise AirflowFailException(
                    f"{self.dataset}: cannot list the consents of connection {self.openbanking_conn_id!r}: "
                    f"{exc}. Create or fix it (`airflow connections add {self.openbanking_conn_id} "
                    "--conn-type openbanking …`); retrying cannot help."
                ) from exc
            self._page_logs = len(consents) == 1
            self.log.info(
                "Landing %s of %d consent(s) of connection %r for [%s, %s) under %s (%d worker(s))",
                self.dataset,
                len(consents),
                self.openbanking_conn_id,
                start.isoformat(),
                end.isoformat(),
                destination,
                self.max_workers,
            )
            work = _Work(self, hook, layout, start, end, _resume_key(context, self) if batched else None)
            result = BatchRunner(work, max_workers=self.max_workers, label=self.dataset, logger=self.log).run(
                consents
            )
        finally:
            hook.close()
        landed = result.landed
        self._landed_paths = [x.path for x in landed if x.kind == "records"]
        self._landed_files = [x.path for x in landed if x.kind == "file"]
        summary = self._header(start, end)
        summary["records"], summary["pages"] = result.records, result.pages
        summary["dropped"] = result.dropped
        summary.update(summarize(result))
        if batched:
            summary["manifest"] = self._write_manifest(layout, result, start, end)
        if len(result.outcomes) == 1:
            summary.update(self._details(result.outcomes[0]))
        self.log.info(
            "%s: %d consent(s), %d failed; %d record(s) in %d page(s), %d file(s) in %.1f s",
            self.dataset,
            len(result.outcomes),
            len(result.failed),
            result.records,
            result.pages,
            len(landed),
            result.seconds,
        )
        if result.failed:
            raise self._failure(result)
        return summary

    def _details(self, outcome: ConsentOutcome) -> dict[str, Any]:
        """The per-file keys of a one-consent task (bounded by the consent's accounts)."""
        records = [x for x in outcome.landed if x.kind == "records"]
        out: dict[str, Any] = {"consent_id": outcome.consent_id, "paths": sorted(x.path for x in records)}
        if self.per_account:
            out["accounts"] = {
                x.account_id: {"records": x.records, "pages": x.pages, "dropped": x.dropped, "path": x.path}
                for x in sorted(records, key=lambda x: str(x.account_id))
                if x.account_id is not None
            }
        out["skipped"] = dict(sorted(outcome.skipped.items()))
        return out

    def _write_manifest(
        self, layout: Layout, result: BatchResult, start: dt.datetime, end: dt.datetime
    ) -> str:
        """Every file this task's consents landed (this try or an earlier one of the run), one JSON
        line each: what the load step reads instead of an unbounded XCom."""
        path = layout.batch_manifest(self.batch_name())
        window = self.query_window(start, end)
        with JsonLinesWriter(path) as writer:
            for outcome in result.outcomes:
                for x in outcome.landed:
                    writer.write_record({"consent_id": outcome.consent_id, **x.to_dict(), **window})
        return str(path)

    def _failure(self, result: BatchResult) -> AirflowException:
        """The task's error once everything else landed: retryable unless no retry could help."""
        if len(result.outcomes) == 1 and not self.batched:
            message = self._single_failure(result.outcomes[0])
        else:
            message = failure_message(self.dataset, self.openbanking_conn_id, result)
        if result.all_permanent:
            return AirflowFailException(message)
        return AirflowException(message)

    def _single_failure(self, outcome: ConsentOutcome) -> str:
        kept = len(outcome.landed)
        if outcome.reason in ("602", "refresh_rejected", "consent_required"):
            return (
                f"{self.dataset}: the customer's consent {outcome.consent_id!r} of connection "
                f"{self.openbanking_conn_id!r} is missing or revoked, so the customer must re-authorize (run "
                f"`airflow-openbanking authorize --conn-id {self.openbanking_conn_id}` or store a new refresh "
                f"token in the connection); retrying cannot help. {kept} file(s) landed before this stay in "
                f"place. Cause: {outcome.error}"
            )
        if outcome.failed_accounts:
            details = "; ".join(f"{acc}: {reason}" for acc, reason in sorted(outcome.failed_accounts.items()))
            return (
                f"{self.dataset}: {len(outcome.failed_accounts)} account(s) failed ({details}). "
                f"The other accounts' data landed ({kept} file(s))."
            )
        return f"{self.dataset}: consent {outcome.consent_id!r} failed: {outcome.error}"


def _templated(value: Any) -> bool:
    """Known only at run time: a Jinja string, or a mapped / XCom argument."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    return not (value is None or isinstance(value, (int, list, tuple)))


def _resume_key(context: Context, op: BaseOperator) -> str | None:
    """``<run_id>#<first try>``: the same for every retry of one attempt sequence of a task
    instance, new after a clear (Airflow raises ``max_tries`` then), so a retry resumes and a
    clear re-lands."""
    run_id = context.get("run_id")
    if not run_id:
        return None
    ti = context.get("ti")
    max_tries = getattr(ti, "max_tries", None)
    if not isinstance(max_tries, int):
        return str(run_id)
    return f"{run_id}#{max_tries - (op.retries or 0) + 1}"


class _Work:
    """The :class:`~airflow_provider_openbanking.batch.ConsentWork` of one operator execution."""

    def __init__(
        self,
        op: _ConsentBatchOperator,
        hook: OpenBankingHook,
        layout: Layout,
        start: dt.datetime,
        end: dt.datetime,
        resume_key: str | None,
    ) -> None:
        self.op = op
        self.hook = hook
        self.layout = layout
        self.start = start
        self.end = end
        self.resume_key = resume_key if op.resume else None
        self.write_markers = resume_key is not None
        self._tasks: dict[str, ConsentTask] = {}
        self._lock = threading.Lock()

    def task(self, consent_id: str, outcome: ConsentOutcome) -> ConsentTask:
        with self._lock:
            task = self._tasks.get(consent_id)
            if task is None:
                hook = self.hook if consent_id == self.hook.consent_id else self.hook.for_consent(consent_id)
                task = ConsentTask(
                    consent_id, hook, self.layout.for_consent(consent_id), outcome, self.start, self.end
                )
                self._tasks[consent_id] = task
            return task

    def _marker(self, consent_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.layout.consent_marker(consent_id).read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # unreadable: redo the consent
            self.op.log.warning("Ignoring the marker of consent %s: %s", consent_id, exc)
            return None
        if not isinstance(data, dict) or data.get("run_id") != self.resume_key:
            return None
        return data

    def resume(self, consent_id: str) -> ConsentOutcome | None:
        if self.resume_key is None:
            return None
        data = self._marker(consent_id)
        if data is None:
            return None
        previous = ConsentOutcome.from_marker(data)
        if data.get("status") == "landed" or previous.permanent:
            self.op.log.info(
                "%s: consent %s %s in an earlier try of this run: not fetched again",
                self.op.dataset,
                consent_id,
                "landed" if data.get("status") == "landed" else f"failed for good ({previous.reason})",
            )
            return previous
        # failed part-way: redo it, keeping the accounts that landed (their files are complete)
        task = self.task(consent_id, ConsentOutcome(consent_id))
        task.outcome.done_before = {str(x.account_id): x for x in previous.landed if x.account_id}
        return None

    def plan(self, consent_id: str, outcome: ConsentOutcome) -> Sequence[str | None]:
        task = self.task(consent_id, outcome)
        if task.outcome is not outcome:  # a partial consent prepared in resume()
            outcome.done_before, task.outcome = task.outcome.done_before, outcome
        units = list(self.op.plan(task))
        if not outcome.done_before:
            return units
        todo = []
        for unit in units:
            earlier = outcome.done_before.get(str(unit)) if unit is not None else None
            if earlier is not None and _exists(earlier.path):
                outcome.add(earlier)
            else:
                todo.append(unit)
        return todo

    def land(self, consent_id: str, unit: str | None, outcome: ConsentOutcome) -> None:
        self.op.land_unit(self.task(consent_id, outcome), unit)

    def finish(self, outcome: ConsentOutcome) -> None:
        task = self.task(outcome.consent_id, outcome)
        if self.write_markers and (outcome.landed or outcome.permanent):
            path = self.layout.consent_marker(outcome.consent_id)
            with AtomicWriter(path) as writer:
                writer.write(_json_bytes(outcome.to_marker(self.resume_key)))
        try:
            if outcome.ok:
                task.hook.record_success()
            else:
                task.hook.record_error(outcome.reason or "error")
        except Exception as exc:  # the store is bookkeeping here: never fail the data for it
            self.op.log.warning("Could not stamp consent %s in its store: %s", outcome.consent_id, exc)


def _exists(url: str) -> bool:
    try:
        return bool(ObjectStoragePath(url).exists())
    except Exception:
        return False


class _AccountsArgOperator(_ConsentBatchOperator):
    """A batched operator with ``account_ids``.

    :param account_ids: accounts to fetch (a list or a comma-separated string), for every consent
        of the task; ``None`` (default) means every account of each consent. (templated)
    """

    template_fields: Sequence[str] = (*_ConsentBatchOperator.template_fields, "account_ids")

    def __init__(self, *, account_ids: Sequence[str] | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.account_ids = account_ids

    def selected_account_ids(self) -> list[str] | None:
        """The rendered ``account_ids`` as a list, or None for every account."""
        ids = self.account_ids
        if ids is None or ids == "":
            return None
        if isinstance(ids, str):
            ids = [part.strip() for part in ids.split(",") if part.strip()]
        return list(dict.fromkeys(str(a) for a in ids))


class _PerAccountOperator(_AccountsArgOperator):
    """One endpoint call (or pagination) per account, one landed file per account.

    :param accounts_from_landing: take each consent's account ids from the accounts file that
        :class:`OpenBankingAccountsOperator` landed for the same interval under the same
        destination, instead of listing them through ``/accounts`` (one request per consent saved);
        a consent without that file is listed through the API.
    """

    per_account = True

    def __init__(self, *, accounts_from_landing: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accounts_from_landing = accounts_from_landing

    def plan(self, task: ConsentTask) -> Sequence[str | None]:
        """The given accounts, or every account of the consent (``/accounts``, lightweight)."""
        selected = self.selected_account_ids()
        if selected is not None:
            # Fail fast on a lost consent (and warm the consent's token) before its accounts start.
            task.hook.get_access_token()
            return selected
        if self.accounts_from_landing:
            landed = self._landed_account_ids(task)
            if landed is not None:
                return landed
        ids = [str(a["accountId"]) for a in task.hook.iter_accounts("lightweight") if a.get("accountId")]
        self.log.debug("Consent %s covers %d account(s)", task.consent_id, len(ids))
        return ids

    def _landed_account_ids(self, task: ConsentTask) -> list[str] | None:
        layout = task.layout
        # The accounts task may land another format than this one: one window has one file.
        for file_format in FILE_FORMATS:
            accounts = Layout(
                layout.destination,
                "accounts",
                layout.conn_id,
                layout.interval_start,
                layout.interval_end,
                task.consent_id,
                file_format,
            ).records_file()
            try:
                ids = [str(record.get("accountId") or "") for record in iter_records(accounts)]
            except FileNotFoundError:
                continue
            break
        else:
            return None
        # An empty file is a consent without accounts (the accounts task landed it so).
        return list(dict.fromkeys(i for i in ids if i))

    def land_unit(self, task: ConsentTask, unit: str | None) -> None:
        assert unit is not None
        self.land_account(task, unit)

    def land_account(self, task: ConsentTask, account_id: str) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# The operators
# ---------------------------------------------------------------------------------------------


class OpenBankingAccountsOperator(_AccountsArgOperator):
    """Land each consent's accounts (``/accounts``, or ``/accounts/{id}`` per account).

    :param result_type: ``lightweight`` (default) or ``details`` (balances, full account number --
        masked unless ``include_full_account_number`` -- and holdings for investment accounts).
    :param account_ids: with ``result_type="details"``, each account is read from
        ``/accounts/{accountId}`` (704/705 accounts are skipped and reported); otherwise
        ``/accounts`` is paged through (filtered by ``accountIds``). (templated)

    One file per consent for all its accounts:
    ``accounts/conn_id=…/consent_id=…/interval=…/accounts.jsonl``.
    """

    __doc__ = operator_doc(__doc__, CONSENTS_DOC)
    dataset = "accounts"
    template_fields: Sequence[str] = (*_AccountsArgOperator.template_fields, "result_type")

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        result_type: str = "lightweight",
        account_ids: Sequence[str] | str | None = None,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        include_full_account_number: bool = False,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)
        if _literal(result_type) and result_type not in ("lightweight", "details"):
            raise ValueError(f"result_type must be 'lightweight' or 'details', got {result_type!r}")
        self.result_type = result_type

    def land_unit(self, task: ConsentTask, unit: str | None) -> None:
        if self.result_type not in ("lightweight", "details"):
            raise ValueError(f"result_type must be 'lightweight' or 'details', got {self.result_type!r}")
        selected = self.selected_account_ids()
        path = task.layout.records_file()
        hook = task.hook
        if selected is None or self.result_type == "lightweight":
            task.outcome.add(
                self.land_records(
                    path,
                    f"accounts ({self.result_type}) of {task.consent_id}",
                    lambda stats, on_page: hook.iter_accounts(
                        self.result_type, selected, stats=stats, on_page=on_page
                    ),
                )
            )
            return
        hook.get_access_token()  # fail fast on a lost consent

        def fetched(stats: PageStats, on_page: Callable[[PageStats], None]) -> Iterator[dict[str, Any]]:
            for account_id in selected:
                try:
                    account = hook.get_account(account_id)
                except AccountUnavailableError as exc:
                    reason = " ".join(str(x) for x in (exc.code, exc.api_message) if x) or str(exc)
                    self.log.warning("accounts: skipping account %s (%s)", account_id, reason)
                    task.outcome.skip(account_id, reason)
                    continue
                stats.pages += 1
                stats.records += 1
                yield account

        task.outcome.add(self.land_records(path, f"accounts (details, by id) of {task.consent_id}", fetched))


class OpenBankingTransactionsOperator(_PerAccountOperator):
    """Land each account's transactions (``/accounts/{accountId}/transactions``), one file per account.

    The query covers ``[start_time - lookback, end_time)`` in whole days (the API filters on the
    posted date, both ends inclusive), so transactions that post late -- pending ones post within
    ``lookback`` -- are picked up by a later run; consumers de-duplicate on ``transactionId``. The
    file is still keyed by the run's interval, so a rerun replaces it:
    ``transactions/conn_id=…/consent_id=…/interval=…/account_id=….jsonl``.

    :param lookback: how far before ``start_time`` to query (``timedelta`` or days; default 14 days).
    """

    __doc__ = operator_doc(__doc__, ACCOUNT_IDS_DOC, ACCOUNTS_FROM_LANDING_DOC, CONSENTS_DOC)
    dataset = "transactions"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        lookback: dt.timedelta | float = DEFAULT_LOOKBACK,
        account_ids: Sequence[str] | str | None = None,
        accounts_from_landing: bool = False,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        include_full_account_number: bool = False,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)
        self.lookback = lookback if isinstance(lookback, dt.timedelta) else dt.timedelta(days=lookback)
        if self.lookback < dt.timedelta(0):
            raise ValueError(f"lookback must not be negative, got {lookback!r}")

    def query_window(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        return {
            "query_start": (start - self.lookback).date().isoformat(),
            "query_end": _last_day(start, end).isoformat(),
        }

    def land_account(self, task: ConsentTask, account_id: str) -> None:
        window = self.query_window(task.start, task.end)
        hook = task.hook
        task.outcome.add(
            self.land_records(
                task.layout.records_file(account_id),
                f"transactions {account_id} (consent {task.consent_id})",
                lambda stats, on_page: hook.iter_transactions(
                    account_id, window["query_start"], window["query_end"], stats=stats, on_page=on_page
                ),
                account_id,
            )
        )


class OpenBankingStatementsOperator(_PerAccountOperator):
    """Land each account's statement list (``/accounts/{accountId}/statements``) and, with
    ``download=True`` (default), the statement files (``/statements/{statementId}``).

    Statements dated within the interval's days are listed, one JSON Lines file per account; files
    land at ``statement_files/conn_id=…/consent_id=…/interval=…/account_id=…/<statementId>.pdf``,
    streamed and written atomically.

    :param download: also download each statement's file.
    :param accept: the file type asked for (``application/pdf`` by default, or ``image/*``).
    """

    __doc__ = operator_doc(__doc__, ACCOUNT_IDS_DOC, ACCOUNTS_FROM_LANDING_DOC, CONSENTS_DOC)
    dataset = "statements"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        download: bool = True,
        accept: str = "application/pdf",
        account_ids: Sequence[str] | str | None = None,
        accounts_from_landing: bool = False,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        include_full_account_number: bool = False,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)
        self.download = download
        self.accept = accept

    def query_window(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        return {"query_start": start.date().isoformat(), "query_end": _last_day(start, end).isoformat()}

    def _details(self, outcome: ConsentOutcome) -> dict[str, Any]:
        out = super()._details(outcome)
        out["files"] = sorted(x.path for x in outcome.landed if x.kind == "file")
        return out

    def land_account(self, task: ConsentTask, account_id: str) -> None:
        window = self.query_window(task.start, task.end)
        hook = task.hook

        def fetch(stats: PageStats, on_page: Callable[[PageStats], None]) -> Iterator[dict[str, Any]]:
            for statement in hook.iter_statements(
                account_id, window["query_start"], window["query_end"], stats=stats, on_page=on_page
            ):
                if self.download and statement.get("statementId"):
                    self._download(task, account_id, str(statement["statementId"]))
                yield statement

        task.outcome.add(
            self.land_records(
                task.layout.records_file(account_id),
                f"statements {account_id} (consent {task.consent_id})",
                fetch,
                account_id,
            )
        )

    def _download(self, task: ConsentTask, account_id: str, statement_id: str) -> None:
        extension = _EXTENSIONS.get(self.accept.split(";")[0].strip().lower(), ".bin")
        path = task.layout.blob_file(STATEMENT_FILES_DATASET, account_id, statement_id, extension)
        started = time.monotonic()
        with AtomicWriter(path) as writer:
            for chunk in task.hook.download_statement(account_id, statement_id, self.accept):
                writer.write(chunk)
        task.outcome.add(Landed(str(path), account_id, 0, 1, kind="file"))
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

    __doc__ = operator_doc(__doc__, ACCOUNT_IDS_DOC, ACCOUNTS_FROM_LANDING_DOC, CONSENTS_DOC)
    dataset = "contacts"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        account_ids: Sequence[str] | str | None = None,
        accounts_from_landing: bool = False,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        include_full_account_number: bool = False,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)

    def land_account(self, task: ConsentTask, account_id: str) -> None:
        hook = task.hook
        task.outcome.add(
            self.land_one(
                task.layout.records_file(account_id),
                f"contact {account_id} (consent {task.consent_id})",
                lambda: {"accountId": account_id, **hook.get_account_contact(account_id)},
                account_id,
            )
        )


class OpenBankingPaymentNetworksOperator(_PerAccountOperator):
    """Land each account's payment networks (``/accounts/{accountId}/payment-networks``).

    Records are tagged with ``accountId``. Their ``identifier`` is the full account number, so it is
    masked like ``accountNumber`` unless ``include_full_account_number=True``. Accounts without
    payment networks (704) are skipped and reported.
    """

    __doc__ = operator_doc(__doc__, ACCOUNT_IDS_DOC, ACCOUNTS_FROM_LANDING_DOC, CONSENTS_DOC)
    dataset = "payment_networks"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        account_ids: Sequence[str] | str | None = None,
        accounts_from_landing: bool = False,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        include_full_account_number: bool = False,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)

    def prepare(self, record: Mapping[str, Any], account_id: str | None = None) -> Mapping[str, Any]:
        tagged = {"accountId": account_id, **record} if account_id is not None else dict(record)
        if self.include_full_account_number:
            return tagged
        masked = mask_account_numbers(tagged)
        if "identifier" in masked:
            masked["identifier"] = mask_account_number(masked["identifier"])
        return masked

    def land_account(self, task: ConsentTask, account_id: str) -> None:
        hook = task.hook
        task.outcome.add(
            self.land_records(
                task.layout.records_file(account_id),
                f"payment networks {account_id} (consent {task.consent_id})",
                lambda stats, on_page: hook.iter_payment_networks(account_id, stats=stats, on_page=on_page),
                account_id,
            )
        )


class OpenBankingCustomerOperator(_ConsentBatchOperator):
    """Land the customer who gave each consent (``/customers/current``): one file, one record, per
    consent."""

    __doc__ = operator_doc(__doc__, CONSENTS_DOC)
    dataset = "customer"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        include_full_account_number: bool = False,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)

    def land_unit(self, task: ConsentTask, unit: str | None) -> None:
        task.outcome.add(
            self.land_one(task.layout.records_file(), f"customer {task.consent_id}", task.hook.get_customer)
        )


class OpenBankingHoldingsOperator(_AccountsArgOperator):
    """Land the holdings of the investment accounts (``holdings[]`` of each account's details).

    The accounts are listed with ``/accounts?resultType=details``; an investment account listed
    without holdings -- FDX 5.3 keeps them only on ``/accounts/{accountId}`` -- is read by id, so
    every holding lands from a Flinks or a strict FDX server alike
    (:meth:`~airflow_provider_openbanking.hooks.openbanking.OpenBankingHook.iter_holdings`).

    One file per consent for all its accounts, each holding tagged with its ``accountId``:
    ``holdings/conn_id=…/consent_id=…/interval=…/holdings.jsonl``.
    """

    __doc__ = operator_doc(__doc__, ACCOUNT_IDS_DOC, CONSENTS_DOC)
    dataset = "holdings"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = DEFAULT_CONN_ID,
        account_ids: Sequence[str] | str | None = None,
        consent_ids: Sequence[str] | str | None = None,
        shard_index: int | str | None = None,
        shard_count: int | str | None = None,
        destination: ObjectStoragePath | str | None = None,
        start_time: DateArg = None,
        end_time: DateArg = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        include_full_account_number: bool = False,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**shared_arguments(locals()), **kwargs)

    def land_unit(self, task: ConsentTask, unit: str | None) -> None:
        selected = self.selected_account_ids()
        hook = task.hook
        task.outcome.add(
            self.land_records(
                task.layout.records_file(),
                f"holdings {task.consent_id}",
                lambda stats, on_page: hook.iter_holdings(selected, stats=stats, on_page=on_page),
            )
        )


__all__ = [
    "ConsentTask",
    "OpenBankingAccountContactOperator",
    "OpenBankingAccountsOperator",
    "OpenBankingCustomerOperator",
    "OpenBankingHoldingsOperator",
    "OpenBankingPaymentNetworksOperator",
    "OpenBankingProvidersOperator",
    "OpenBankingStatementsOperator",
    "OpenBankingTransactionsOperator",
]
