"""What the example DAGs in ``dags/`` share: names, Assets, the consent list, the transactions plan.

Everything here is cheap at import (no network, no metadata-database access, no Variable reads):
DAG files import it at parse time. Functions that read Variables or landed files are called from
inside tasks only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Asset

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
#: Variable holding the default list of ``openbanking`` connection ids (a JSON list), one per consent.
CONN_IDS_VARIABLE = "openbanking_conn_ids"
DEFAULT_CONN_IDS: tuple[str, ...] = ("openbanking_default",)
WAREHOUSE_CONN_ID = DEFAULT_WAREHOUSE_CONN_ID
SUMMARY_TABLE = "openbanking_daily_summary"


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
    """A list of connection ids from a list, a JSON list or a comma-separated string."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"not a JSON list of connection ids: {text!r}") from None
        else:
            value = [part for part in text.split(",")]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of connection ids, got {type(value).__name__}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"a connection id must be a non-empty string, got {item!r}")
        out.append(item.strip())
    return list(dict.fromkeys(out))


def resolve_conn_ids(param: Any = None) -> list[str]:
    """The consents a run covers: the ``conn_ids`` param if set, else the ``openbanking_conn_ids``
    Variable (a JSON list), else ``["openbanking_default"]``. Call it from a task only."""
    ids = parse_conn_ids(param)
    if ids:
        return ids
    from airflow.sdk import Variable

    ids = parse_conn_ids(Variable.get(CONN_IDS_VARIABLE, default=None))
    return ids or list(DEFAULT_CONN_IDS)


def _as_results(results: Any) -> list[Mapping[str, Any]]:
    """XCom values of upstream tasks as a list: Airflow hands a single value over as is when only
    one of several mapped task instances produced one (the others failed)."""
    if results is None:
        return []
    if isinstance(results, Mapping):
        return [results]
    if isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        results = results[:]  # one request for a LazyXComSequence, not one per item plus a miss
    return [r for r in results if r]


def transaction_jobs(accounts_results: Any) -> list[dict[str, Any]]:
    """One ``OpenBankingTransactionsOperator`` kwargs dict per (consent, account).

    ``accounts_results`` are the XCom values of ``OpenBankingAccountsOperator`` tasks (one per
    consent; a failed consent has none); the account ids are read from the small accounts file each
    one landed. The result feeds ``.expand_kwargs()``.
    """
    jobs: list[dict[str, Any]] = []
    for result in _as_results(accounts_results):
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

    Each (connection, account, query window) is one database transaction. Accounts whose task
    failed landed nothing and keep their rows; skipped accounts (704/705) too. A file holding a
    record the table cannot take (a wrong type) leaves its window's rows unchanged; the other
    windows are loaded, then the task fails naming the refused ones (retrying cannot help).
    """
    from airflow.sdk.exceptions import AirflowFailException

    warehouse = TransactionsWarehouse(sql_conn_id, table)
    warehouse.ensure_table()  # downstream readers find the table even when nothing landed yet
    windows: list[dict[str, Any]] = []
    refused: list[str] = []
    for result in _as_results(results):
        conn_id = str(result["conn_id"])
        for account_id, landed in sorted((result.get("accounts") or {}).items()):
            path = landed.get("path")
            if not path:
                continue
            try:
                load = warehouse.replace_window(
                    conn_id, account_id, result["query_start"], result["query_end"], iter_records(path)
                )
            except ValueError as exc:  # bad data in the file: nothing of this window was touched
                log.error("%s / %s: window not loaded, its rows are unchanged: %s", conn_id, account_id, exc)
                refused.append(f"{conn_id} / {account_id}: {exc}")
                continue
            windows.append(load.to_dict())
    if refused:
        raise AirflowFailException(
            f"{len(refused)} window(s) refused, their rows are unchanged ({len(windows)} loaded): "
            + "; ".join(refused)
        )
    return {
        "table": table,
        "sql_conn_id": sql_conn_id,
        "windows": len(windows),
        "inserted": sum(w["inserted"] for w in windows),
        "deleted": sum(w["deleted"] for w in windows),
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
    "POOL",
    "SUMMARY_TABLE",
    "TRANSACTIONS_FILES_ASSET",
    "TRANSACTIONS_TABLE_ASSET",
    "WAREHOUSE_CONN_ID",
    "as_literal_ids",
    "consent_sensor",
    "landed_asset",
    "landing_base_url",
    "load_transactions",
    "parse_conn_ids",
    "resolve_conn_ids",
    "summary_sql",
    "transaction_jobs",
]
