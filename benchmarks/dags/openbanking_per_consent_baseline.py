"""
### Baseline for benchmarks/moonshot.py: the per-consent DAG of 0.x

`dags/openbanking_accounts_transactions.py` as it was before the shards (commit 462a790, the last
version before "sharded example DAGs"), kept here -- not in `dags/` -- so that the benchmark can
run "today's per-consent DAG" next to the sharded one in the same deployment. Changes, only what
running it beside today's DAG needs: its `dag_id` (`openbanking_per_consent_baseline`), no catchup,
and the load task returning how long its bulk window-replace took (the benchmark's load-step figure).

The 0.x text:

For each customer consent (one ``openbanking`` connection per consent):

1. **wait_for_consent** -- `OpenBankingTokenSensor` (reschedule mode, or deferrable when
   `[operators] default_deferrable` is on) waits until the consent yields an access token;
2. **land_accounts** -- the consent's accounts with details land as JSON Lines;

then, over every (consent, account) pair, **dynamic task mapping**:

3. **land_transactions** -- the account's transactions of the run's data interval, widened by a
   14-day lookback so pending transactions that post late are picked up, land as one file per
   account (Asset `openbanking_transactions_files`);
4. **load_transactions** -- each account file *replaces* its window in the SQL table
   `openbanking_transactions` (connection `openbanking_warehouse`: SQLite, Postgres, Snowflake…
   whatever the connection is), so a pending transaction that posted under a new id leaves no
   duplicate and a rerun leaves the table unchanged (Asset `openbanking_transactions`);
5. **all_consents_ok** -- fails the run if any consent or account failed, after the others loaded.

Every task that calls the API runs in the pool `openbanking_api` (size it to the rate limit).

Params: `conn_ids` (list of connection ids; empty = Variable `openbanking_conn_ids`, a JSON
list, else `["openbanking_default"]`) and `warehouse_conn_id`.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, TriggerRule, dag, task, task_group

from airflow_provider_openbanking.example_dags_support import (
    ACCOUNTS_FILES_ASSET,
    POOL,
    TRANSACTIONS_FILES_ASSET,
    TRANSACTIONS_TABLE_ASSET,
    WAREHOUSE_CONN_ID,
    as_literal_ids,
    load_transactions,
    resolve_conn_ids,
    transaction_jobs,
)
from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountsOperator,
    OpenBankingTransactionsOperator,
)
from airflow_provider_openbanking.sensors.openbanking import OpenBankingTokenSensor

#: How far before the interval each run asks for transactions: pending ones post within days.
LOOKBACK = dt.timedelta(days=14)


#: The 0.x DAG's arguments, unchanged but for catchup: the benchmark triggers each run it measures.
RETRIES = dict(
    owner="data-engineering",
    retries=3,
    retry_delay=dt.timedelta(minutes=2),
    retry_exponential_backoff=True,
    max_retry_delay=dt.timedelta(minutes=30),
)
PARAMS = dict(
    conn_ids=Param(
        None,
        type=["null", "array"],
        items={"type": "string"},
        description="openbanking connection ids, one per consent. Empty: the Variable "
        "openbanking_conn_ids (JSON list), else ['openbanking_default'].",
    ),
    warehouse_conn_id=Param(
        WAREHOUSE_CONN_ID, type="string", description="SQL connection of the warehouse table."
    ),
)


@dag(
    "openbanking_per_consent_baseline",
    doc_md=__doc__,
    tags=["openbanking", "benchmark"],
    params=PARAMS,
    default_args=RETRIES,
    max_active_runs=3,
    dagrun_timeout=dt.timedelta(hours=6),
    catchup=False,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),  # real daily intervals
)
def openbanking_accounts_transactions() -> None:
    @task
    def consent_conn_ids(params: dict[str, Any] | None = None) -> list[str]:
        """The connections (consents) this run covers."""
        return resolve_conn_ids((params or {}).get("conn_ids"))

    @task_group(group_id="consent")
    def consent(conn_id: str) -> Any:
        """Per consent: wait for a usable consent, then land its accounts."""
        wait = OpenBankingTokenSensor(
            task_id="wait_for_consent",
            openbanking_conn_id=conn_id,
            min_ttl=60,
            mode="reschedule",
            poke_interval=300,
            timeout=3600,
            pool=POOL,
            # A sensor timeout is never retried; this one retry only covers a deferred sensor that
            # Airflow 3.3 marks failed when its trigger fires before the scheduler saw the deferral
            # (apache/airflow#67287).
            retries=1,
        )
        accounts = OpenBankingAccountsOperator(
            task_id="land_accounts",
            openbanking_conn_id=conn_id,
            result_type="details",
            pool=POOL,
            outlets=[ACCOUNTS_FILES_ASSET],
        )
        wait >> accounts
        return accounts.output

    accounts_results = consent.expand(conn_id=consent_conn_ids())

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def plan_transactions(accounts_results: Any) -> list[dict[str, Any]]:
        """One transactions task per (consent, account) of every consent that landed its accounts.

        ``accounts_results``: the accounts tasks' XCom values (only those that succeeded)."""
        return transaction_jobs(accounts_results)

    # The account ids come from the bank: as_literal_ids wraps them in literal() so that Airflow
    # never renders them as Jinja templates.
    transactions = OpenBankingTransactionsOperator.partial(
        task_id="land_transactions",
        lookback=LOOKBACK,
        max_workers=1,
        pool=POOL,
        outlets=[TRANSACTIONS_FILES_ASSET],
        map_index_template="{{ task.openbanking_conn_id }} {{ task.account_ids | join(',') }}",
    ).expand_kwargs(plan_transactions(accounts_results).map(as_literal_ids))

    @task(
        trigger_rule=TriggerRule.ALL_DONE,
        outlets=[TRANSACTIONS_TABLE_ASSET],
        # Overlapping windows of concurrent runs are loaded one at a time.
        max_active_tis_per_dag=1,
    )
    def load(results: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Window-replace each landed account file into the warehouse table."""
        started = time.perf_counter()
        result = load_transactions(results, (params or {}).get("warehouse_conn_id") or WAREHOUSE_CONN_ID)
        return {**result, "seconds": round(time.perf_counter() - started, 3)}

    loaded = load.override(task_id="load_transactions")(transactions.output)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def all_consents_ok() -> None:
        """Runs only if no consent, account or load failed: otherwise the run ends failed."""

    [accounts_results, transactions, loaded] >> all_consents_ok()


openbanking_accounts_transactions()
