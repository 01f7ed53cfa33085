"""What the example DAGs in ``dags/`` share: names, Assets, the consent list, the transactions plan.

Everything here is cheap at import (no network, no metadata-database access, no Variable reads):
DAG files import it at parse time. Functions that read Variables or landed files are called from
inside tasks only.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Asset, Param

from airflow_provider_openbanking.batch import DEFAULT_CONSENT_ID, mapped_results, parse_id_list
from airflow_provider_openbanking.warehouse import (
    DEFAULT_WAREHOUSE_CONN_ID,
    TRANSACTIONS_TABLE,
    TransactionsWarehouse,
    iter_records,
)

log = logging.getLogger(__name__)

#: The Airflow pool every task that calls the Open Banking API runs in: its slots bound the
#: number of concurrent API callers (size it to the provider's rate limit).
POOL = "openbanking_api"
#: Variable holding the default list of ``openbanking`` connection ids (a JSON list); each
#: connection is one API client with any number of consents.
CONN_IDS_VARIABLE = "openbanking_conn_ids"
#: Consents per shard when a DAG run does not say (param ``consents_per_shard``): a shard is one
#: task instance per dataset, so a few hundred keeps both the number of task instances and the
#: work lost by one failed try small (see docs/operators.md, "Sizing").
DEFAULT_CONSENTS_PER_SHARD = 250
#: Threads per shard task (``max_workers``): with the pool's slots, the concurrency against the API.
SHARD_WORKERS = 8
DEFAULT_CONN_IDS: tuple[str, ...] = ("openbanking_default",)
WAREHOUSE_CONN_ID = DEFAULT_WAREHOUSE_CONN_ID
SUMMARY_TABLE = "openbanking_daily_summary"


#: How a shard's task instance is labelled in the UI (``{{ task.… }}``: the operator's rendered
#: arguments); a ``@task`` function's label names its arguments directly (``{{ shard_index }}``).
SHARD_LABEL = "{{ task.openbanking_conn_id }} shard {{ task.shard_index }} of {{ task.shard_count }}"
SHARD_TASK_LABEL = SHARD_LABEL.replace("task.", "")


def default_args(**overrides: Any) -> dict[str, Any]:
    """The ``default_args`` of the example DAGs' tasks, with what a DAG changes: owner
    ``data-engineering``, 3 retries 5 minutes apart, backing off exponentially (a fresh dict each
    call: Airflow may keep and change what it is given)."""
    return {
        "owner": "data-engineering",
        "retries": 3,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": True,
        **overrides,
    }


def shard_params(shard: str, *, verb: str = "covered") -> dict[str, Param]:
    """The DAG params of a DAG that maps over shards of its connections' consents:
    ``conn_ids`` (read by :func:`resolve_conn_ids`) and ``consents_per_shard`` (read by
    :func:`shard_plan`). ``shard`` says what one shard is in this DAG (``"one check task"``);
    ``verb`` what the DAG does to each consent."""
    return {
        "conn_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            description=f"openbanking connection ids (API clients); every consent of each is {verb}. "
            f"Empty: the Variable {CONN_IDS_VARIABLE} (JSON list), else {list(DEFAULT_CONN_IDS)}.",
        ),
        "consents_per_shard": Param(
            DEFAULT_CONSENTS_PER_SHARD,
            type="integer",
            minimum=1,
            description=f"About how many consents {shard} covers.",
        ),
    }


def shard_operator_args(**selection: Any) -> dict[str, Any]:
    """The arguments every shard's operator takes: ``selection`` (its connection and shard, or
    nothing for ``.partial()`` before ``.expand_kwargs(shard_plan)``), ``SHARD_WORKERS`` threads,
    the API pool and the shard label."""
    return {**selection, "max_workers": SHARD_WORKERS, "pool": POOL, "map_index_template": SHARD_LABEL}


def plan_run_shards(params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The run's shard plan from its params (``conn_ids``, ``consents_per_shard``): what a DAG's
    ``plan_shards`` task returns. Call it from a task only."""
    params = params or {}
    return shard_plan(resolve_conn_ids(params.get("conn_ids")), params.get("consents_per_shard"))


def landing_base_url() -> str:
    """The landing destination as a URL, read from configuration without touching any storage.

    ``[openbanking] landing_destination`` (or ``AIRFLOW__OPENBANKING__LANDING_DESTINATION``), else
    ``file://$AIRFLOW_HOME/openbanking`` -- the same default the operators use at run time.
    """
    configured = os.environ.get("AIRFLOW__OPENBANKING__LANDING_DESTINATION")
    if not configured:
        try:
            from airflow.configuration import conf

            configured = conf.get("openbanking", "landing_destination", fallback=None)
        except Exception:  # pragma: no cover - configuration not importable
            configured = None
    if configured:
        text = str(configured).rstrip("/")
        if "://" in text:
            return text
        return "file://" + os.path.abspath(os.path.expanduser(text))
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return "file://" + os.path.join(os.path.abspath(home), "openbanking")


def landed_asset(dataset: str) -> Asset:
    """The Asset of one landed dataset: every file under ``<destination>/<dataset>/``.

    Its URI names the dataset, not the storage location: an Asset's identity must not change when
    ``landing_destination`` does (a name bound to two URIs leaves one of them inactive and fails
    the producing task). Where the files are is reported per file through OpenLineage, and is
    :func:`landing_base_url` + ``/<dataset>``.
    """
    return Asset(
        name=f"openbanking_{dataset}_files",
        uri=f"openbanking://landing/{dataset}",
        group="openbanking",
    )


#: Emitted by every successful per-account transactions landing task.
TRANSACTIONS_FILES_ASSET = landed_asset("transactions")
ACCOUNTS_FILES_ASSET = landed_asset("accounts")
#: Emitted once per run by the load step, when the warehouse table is up to date: schedule
#: downstream work that reads the table on this one.
TRANSACTIONS_TABLE_ASSET = Asset(
    name=TRANSACTIONS_TABLE, uri=f"sql://{TRANSACTIONS_TABLE}", group="openbanking"
)


def consent_sensor(conn_id: Any, **overrides: Any) -> Any:
    """The consent gate every example DAG starts a consent's work with.

    ``OpenBankingTokenSensor`` in ``reschedule`` mode (it holds no worker slot while it waits;
    deferrable instead when ``[operators] default_deferrable`` is on), checking every 5 minutes
    for up to an hour whether the consent yields an access token. Not retried: its timeout is the
    retry. ``conn_id`` may be a mapped argument.
    """
    from airflow_provider_openbanking.sensors.openbanking import OpenBankingTokenSensor

    kwargs: dict[str, Any] = {
        "task_id": "wait_for_consent",
        "min_ttl": 60,
        "mode": "reschedule",
        "poke_interval": 300,
        "timeout": 3600,
        "pool": POOL,
        "retries": 0,
        **overrides,
    }
    return OpenBankingTokenSensor(openbanking_conn_id=conn_id, **kwargs)


def parse_conn_ids(value: Any) -> list[str]:
    """A list of connection ids from a list, a JSON list or a comma-separated string (``[]`` when
    unset; see :func:`~airflow_provider_openbanking.batch.parse_id_list`)."""
    return parse_id_list(value, field="conn_ids", item="connection id") or []


def resolve_conn_ids(param: Any = None) -> list[str]:
    """The consents a run covers: the ``conn_ids`` param if set, else the ``openbanking_conn_ids``
    Variable (a JSON list), else ``["openbanking_default"]``. Call it from a task only."""
    ids = parse_conn_ids(param)
    if ids:
        return ids
    from airflow.sdk import Variable

    ids = parse_conn_ids(Variable.get(CONN_IDS_VARIABLE, default=None))
    return ids or list(DEFAULT_CONN_IDS)


def shard_plan(conn_ids: Sequence[str], consents_per_shard: Any = None) -> list[dict[str, Any]]:
    """The shards a run maps over: ``{"openbanking_conn_id", "shard_index", "shard_count"}`` each.

    Each connection's consents (``OpenBankingHook.consent_ids()``) are split into
    ``ceil(consents / consents_per_shard)`` shards by a stable hash of the consent id; the shard
    tasks select their own consents, so no consent id travels through XCom. A connection that
    cannot be read still gets one shard, whose tasks then fail naming the problem while the other
    connections go on; one without any consent gets none (and a warning). A plan longer than
    ``[core] max_map_length`` fails at once, without retries. Call it from a task only.
    """
    from airflow_provider_openbanking.batch import check_map_length, shard_count_for
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    per_shard = int(consents_per_shard or DEFAULT_CONSENTS_PER_SHARD)
    if per_shard < 1:
        raise ValueError(f"consents_per_shard must be at least 1, got {consents_per_shard!r}")
    plan: list[dict[str, Any]] = []
    for conn_id in conn_ids:
        hook = OpenBankingHook(conn_id)
        try:
            consents = len(hook.consent_ids())
        except Exception as exc:
            log.error("%s: cannot list its consents (%s); its shard will fail and say why", conn_id, exc)
            consents = 1
        finally:
            hook.close()
        if consents == 0:
            log.warning(
                "%s: no consent (no refresh_token extra, nothing in its consent store): skipped", conn_id
            )
            continue
        count = shard_count_for(consents, per_shard)
        log.info("%s: %d consent(s) in %d shard(s) of about %d", conn_id, consents, count, per_shard)
        plan.extend(
            {"openbanking_conn_id": conn_id, "shard_index": index, "shard_count": count}
            for index in range(count)
        )
    check_map_length(
        plan,
        "the shard plan",
        hint=f"Or raise the DAG param consents_per_shard (now {per_shard}) so that fewer shards cover "
        "the same consents.",
    )
    return plan


def shard_layout(
    dataset: str,
    conn_id: str,
    interval_start: Any,
    interval_end: Any,
    destination: Any = None,
) -> Any:
    """The landing :class:`~airflow_provider_openbanking.landing.Layout` a shard task wrote to."""
    from airflow_provider_openbanking.landing import Layout, to_storage_path
    from airflow_provider_openbanking.operators.openbanking import _to_utc

    return Layout(
        to_storage_path(destination),
        dataset,
        conn_id,
        _to_utc(interval_start, "interval_start"),
        _to_utc(interval_end, "interval_end"),
    )


def shard_manifest(
    dataset: str,
    conn_id: str,
    shard_index: int,
    shard_count: int,
    interval_start: Any,
    interval_end: Any,
    destination: Any = None,
) -> Any:
    """Where the shard task of ``dataset`` listed the files it landed (see the operators)."""
    layout = shard_layout(dataset, conn_id, interval_start, interval_end, destination)
    return layout.batch_manifest(f"shard={int(shard_index):04d}-of-{int(shard_count):04d}")


def load_transactions_shard(
    conn_id: str,
    shard_index: int,
    shard_count: int,
    interval_start: Any,
    interval_end: Any,
    sql_conn_id: str = WAREHOUSE_CONN_ID,
    table: str = TRANSACTIONS_TABLE,
    destination: Any = None,
) -> dict[str, Any]:
    """Window-replace, in bulk, every account file one shard's transactions task landed.

    The files are read from the shard's manifest, written by the transactions task even when some
    consents failed -- so this step loads what landed whatever the outcome of the landing task
    (the run still ends failed on the consents that did not). No manifest: nothing landed.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_openbanking.warehouse import Window

    manifest = shard_manifest(
        "transactions", conn_id, shard_index, shard_count, interval_start, interval_end, destination
    )
    warehouse = TransactionsWarehouse(sql_conn_id, table)
    warehouse.ensure_table()  # downstream readers find the table even when nothing landed yet
    try:
        entries = list(iter_records(manifest))
    except FileNotFoundError:
        log.warning("No manifest at %s: the shard's transactions task landed nothing", manifest)
        entries = []
    windows = (
        Window(
            conn_id,
            str(entry["consent_id"]),
            str(entry["account_id"]),
            entry["query_start"],
            entry["query_end"],
            iter_records(entry["path"]),
        )
        for entry in entries
        if entry.get("kind", "records") == "records" and entry.get("account_id")
    )
    result = warehouse.replace_windows(windows)
    if result.refused:
        raise AirflowFailException(
            f"{len(result.refused)} window(s) refused, their rows are unchanged ({result.windows} loaded): "
            + "; ".join(result.refused[:20])
        )
    per_window = result.seconds / result.windows if result.windows else 0.0
    return {
        "table": table,
        "sql_conn_id": sql_conn_id,
        "manifest": str(manifest),
        "windows": result.windows,
        "inserted": result.inserted,
        "deleted": result.deleted,
        "db_transactions": result.transactions,
        "seconds": round(result.seconds, 3),
        "ms_per_window": round(per_window * 1000, 3),
    }


def check_shard_health(
    conn_id: str,
    shard_index: int,
    shard_count: int,
    *,
    interval_start: Any,
    interval_end: Any,
    warn_within_days: float | None = None,
    destination: Any = None,
    max_workers: int = SHARD_WORKERS,
    **context: Any,
) -> dict[str, Any]:
    """Check every consent of one shard (refresh + one cheap call per data cluster, through
    :func:`~airflow_provider_openbanking.consents.health.check_consent`) on ``max_workers``
    threads of the batch runner, and land the shard's health records as one JSON Lines file,
    ``consent_health/conn_id=…/interval=…/shard=KKKK-of-NNNN.jsonl`` (a rerun replaces it).

    Returns what :func:`~airflow_provider_openbanking.consents.health.summarize_health` reads:
    ``conn_id``, ``path``, ``checked``, ``healthy`` (consent ids), ``unhealthy`` (summary lines),
    ``warnings``, ``states`` -- bounded by the shard's size. Never fails for an unhealthy consent.
    """
    from airflow_provider_openbanking.batch import BatchRunner, ConsentOutcome, select_consents
    from airflow_provider_openbanking.consents.health import (
        IDLE_WARN_DAYS,
        ConsentStatus,
        check_consent,
        health_record,
        land_health_records,
    )
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    warn = IDLE_WARN_DAYS if warn_within_days is None else float(warn_within_days)
    hook = OpenBankingHook(conn_id)
    records: dict[str, dict[str, Any]] = {}
    try:
        try:
            ids = select_consents(hook.consent_ids(), shard=(int(shard_index), int(shard_count)))
        except Exception as exc:  # a bad connection or an unreachable store: one error record
            message = hook.redact(f"{type(exc).__name__}: {exc}")
            ids = []
            records[DEFAULT_CONSENT_ID] = health_record(
                ConsentStatus(conn_id=conn_id, state="error", message=message), **context
            )

        class _Health:
            def resume(self, consent_id: str) -> ConsentOutcome | None:
                return None

            def plan(self, consent_id: str, outcome: ConsentOutcome) -> list[str | None]:
                return [None]

            def land(self, consent_id: str, unit: str | None, outcome: ConsentOutcome) -> None:
                target = hook if consent_id == hook.consent_id else hook.for_consent(consent_id)
                records[consent_id] = check_consent(target, warn_within_days=warn, **context)

            def finish(self, outcome: ConsentOutcome) -> None:
                return None

        BatchRunner(_Health(), max_workers=max_workers, label="consent_health", logger=log).run(ids)
    finally:
        hook.close()
    layout = shard_layout("consent_health", conn_id, interval_start, interval_end, destination)
    path = layout.batch_file(f"shard={int(shard_index):04d}-of-{int(shard_count):04d}")
    return land_health_records(conn_id, path, [records[c] for c in sorted(records)])


def transaction_jobs(accounts_results: Any) -> list[dict[str, Any]]:
    """One ``OpenBankingTransactionsOperator`` kwargs dict per (consent, account).

    ``accounts_results`` are the XCom values of ``OpenBankingAccountsOperator`` tasks (one per
    consent; a failed consent has none); the account ids are read from the small accounts file each
    one landed. The result feeds ``.expand_kwargs()``.
    """
    jobs: list[dict[str, Any]] = []
    for result in mapped_results(accounts_results):
        conn_id = str(result["conn_id"])
        account_ids: list[str] = []
        for path in result.get("paths") or []:
            for account in iter_records(path):
                account_id = account.get("accountId")
                if account_id and account_id not in account_ids:
                    account_ids.append(str(account_id))
        jobs.extend({"openbanking_conn_id": conn_id, "account_ids": [acc]} for acc in account_ids)
    return sorted(jobs, key=lambda job: (job["openbanking_conn_id"], job["account_ids"][0]))


def as_literal_ids(job: Mapping[str, Any]) -> dict[str, Any]:
    """One :func:`transaction_jobs` entry with its account ids wrapped in ``literal()``.

    The ids come from the bank's API, and Airflow renders the values that ``expand_kwargs()``
    takes from an upstream list of dicts as Jinja templates: an account id such as
    ``{{ conn.other.password }}`` would be evaluated in the worker and sent to the API, a trailing
    newline would be dropped. Map the plan through this function
    (``.expand_kwargs(plan.map(as_literal_ids))``) so the ids stay data.
    """
    from airflow.sdk import literal

    return {**job, "account_ids": literal(list(job["account_ids"]))}


def load_transactions(
    results: Any,
    sql_conn_id: str = WAREHOUSE_CONN_ID,
    table: str = TRANSACTIONS_TABLE,
) -> dict[str, Any]:
    """Window-replace every account file the transactions tasks landed into the warehouse table.

    The windows are written in bulk (see :meth:`TransactionsWarehouse.replace_windows`); each
    window's replace is all or nothing. Accounts whose task
    failed landed nothing and keep their rows; skipped accounts (704/705) too. A file holding a
    record the table cannot take (a wrong type) leaves its window's rows unchanged; the other
    windows are loaded, then the task fails naming the refused ones (retrying cannot help).
    """
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_openbanking.warehouse import Window

    warehouse = TransactionsWarehouse(sql_conn_id, table)
    warehouse.ensure_table()  # downstream readers find the table even when nothing landed yet
    windows = [
        Window(
            str(result["conn_id"]),
            str(result.get("consent_id") or DEFAULT_CONSENT_ID),
            account_id,
            result["query_start"],
            result["query_end"],
            iter_records(landed["path"]),
        )
        for result in mapped_results(results)
        for account_id, landed in sorted((result.get("accounts") or {}).items())
        if landed.get("path")
    ]
    loaded = warehouse.replace_windows(windows)
    if loaded.refused:
        raise AirflowFailException(
            f"{len(loaded.refused)} window(s) refused, their rows are unchanged ({loaded.windows} loaded): "
            + "; ".join(loaded.refused)
        )
    return {
        "table": table,
        "sql_conn_id": sql_conn_id,
        "windows": loaded.windows,
        "inserted": loaded.inserted,
        "deleted": loaded.deleted,
        "rows": warehouse.count(),
    }


def summary_sql(source: str = TRANSACTIONS_TABLE, target: str = SUMMARY_TABLE) -> Sequence[str]:
    """Portable statements that rebuild the daily per-account summary from the transactions table."""
    from airflow_provider_openbanking.warehouse import check_identifier

    source, target = check_identifier(source), check_identifier(target)
    return (
        f"""CREATE TABLE IF NOT EXISTS {target} (
    conn_id VARCHAR(250) NOT NULL,
    account_id VARCHAR(250) NOT NULL,
    day VARCHAR(10) NOT NULL,
    transactions INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    credits NUMERIC(18, 2) NOT NULL,
    debits NUMERIC(18, 2) NOT NULL,
    net NUMERIC(18, 2) NOT NULL,
    PRIMARY KEY (conn_id, account_id, day)
)""",
        f"DELETE FROM {target}",
        f"""INSERT INTO {target} (conn_id, account_id, day, transactions, pending, credits, debits, net)
SELECT conn_id, account_id, window_date,
       COUNT(*),
       SUM(CASE WHEN status = 'PENDING' THEN 1 ELSE 0 END),
       ROUND(SUM(CASE WHEN signed_amount > 0 THEN signed_amount ELSE 0 END), 2),
       ROUND(SUM(CASE WHEN signed_amount < 0 THEN -signed_amount ELSE 0 END), 2),
       ROUND(SUM(COALESCE(signed_amount, 0)), 2)
FROM {source}
GROUP BY conn_id, account_id, window_date""",
    )


__all__ = [
    "ACCOUNTS_FILES_ASSET",
    "CONN_IDS_VARIABLE",
    "DEFAULT_CONN_IDS",
    "DEFAULT_CONSENTS_PER_SHARD",
    "POOL",
    "SHARD_LABEL",
    "SHARD_TASK_LABEL",
    "SHARD_WORKERS",
    "SUMMARY_TABLE",
    "TRANSACTIONS_FILES_ASSET",
    "TRANSACTIONS_TABLE_ASSET",
    "WAREHOUSE_CONN_ID",
    "as_literal_ids",
    "check_shard_health",
    "consent_sensor",
    "default_args",
    "landed_asset",
    "landing_base_url",
    "load_transactions",
    "load_transactions_shard",
    "parse_conn_ids",
    "plan_run_shards",
    "resolve_conn_ids",
    "shard_layout",
    "shard_manifest",
    "shard_operator_args",
    "shard_params",
    "shard_plan",
    "summary_sql",
    "transaction_jobs",
]
