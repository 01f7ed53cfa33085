"""
### Open Banking: accounts and transactions of every consent into the warehouse, every day

Each `openbanking` connection is one API client with any number of customer consents (its
`default` consent -- the `refresh_token` extra -- and those in its consent store). The run covers
every consent of every connection in `conn_ids`, in **shards**: each connection's consents are
split by a stable hash of the consent id into `ceil(consents / consents_per_shard)` shards, and
the DAG maps over the shards, not over consents or accounts, so a run has `3 x shards + 3` task
instances whether it covers 10 consents or 10,000.

1. **plan_shards** -- lists each connection's shards (fails at once, without retries, if the
   list would be longer than `[core] max_map_length`);
2. per shard (a mapped task group):
   - **land_accounts** -- every consent's accounts with details (one refresh grant per consent:
     a dead consent -- 602, refused refresh -- is recorded and the others go on);
   - **land_transactions** -- each account's transactions of the run's data interval, widened by a
     14-day lookback so pending transactions that post late are picked up, one file per account
     under `transactions/conn_id=…/consent_id=…/interval=…/` (account ids read from the landed
     accounts files: no second `/accounts` call) -- Asset `openbanking_transactions_files`;
   - **load_transactions** -- the shard's files *replace* their windows in the SQL table
     `openbanking_transactions` (connection `openbanking_warehouse`), in bulk, so a pending
     transaction that posted under a new id leaves no duplicate and a rerun leaves the table as is;
3. **table_updated** -- once every shard has loaded (Asset `openbanking_transactions`);
4. **all_consents_ok** -- fails the run if any consent, account or load failed, after everything
   else landed and loaded. Each failed shard task names its failed consents and their reasons;
   a retry of a shard redoes only the consents that did not land.

Inside a shard, `SHARD_WORKERS` threads work across consents x accounts. Every API task runs in
the pool `openbanking_api`; size pool, workers and the connection's `max_requests_per_second`
together (docs/operators.md, "Sizing").

Params: `conn_ids` (empty = Variable `openbanking_conn_ids`, a JSON list, else
`["openbanking_default"]`), `consents_per_shard`, `warehouse_conn_id`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, TriggerRule, dag, task, task_group

from airflow_provider_openbanking.example_dags_support import (
    ACCOUNTS_FILES_ASSET,
    SHARD_TASK_LABEL,
    TRANSACTIONS_FILES_ASSET,
    TRANSACTIONS_TABLE_ASSET,
    WAREHOUSE_CONN_ID,
    default_args,
    load_transactions_shard,
    plan_run_shards,
    shard_operator_args,
    shard_params,
)
from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountsOperator,
    OpenBankingTransactionsOperator,
)

#: How far before the interval each run asks for transactions: pending ones post within days.
LOOKBACK = dt.timedelta(days=14)


@dag(
    dag_id="openbanking_accounts_transactions",
    # Real daily intervals [00:00, 24:00) UTC: `@daily` is a CronTriggerTimetable in Airflow 3,
    # whose runs have an empty interval.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=True,
    max_active_runs=3,
    dagrun_timeout=dt.timedelta(hours=6),
    default_args=default_args(retry_delay=dt.timedelta(minutes=2), max_retry_delay=dt.timedelta(minutes=30)),
    params={
        **shard_params("one shard (one task instance per step)"),
        "warehouse_conn_id": Param(
            WAREHOUSE_CONN_ID, type="string", description="SQL connection of the warehouse table."
        ),
    },
    tags=["openbanking", "example"],
    doc_md=__doc__,
)
def openbanking_accounts_transactions() -> None:
    @task
    def plan_shards(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One entry per shard of every connection's consents."""
        return plan_run_shards(params)

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[TRANSACTIONS_TABLE_ASSET])
    def table_updated() -> None:
        """Every shard's load ran: the table is as up to date as this run makes it."""

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def all_consents_ok() -> None:
        """Runs only if no consent, account or load failed: otherwise the run ends failed."""

    table, final = table_updated(), all_consents_ok()

    @task_group(group_id="shard")
    def shard(openbanking_conn_id: str, shard_index: int, shard_count: int) -> None:
        """Per shard: land the consents' accounts, then their transactions, then load them."""
        selection = shard_operator_args(
            openbanking_conn_id=openbanking_conn_id, shard_index=shard_index, shard_count=shard_count
        )
        accounts = OpenBankingAccountsOperator(
            task_id="land_accounts", result_type="details", outlets=[ACCOUNTS_FILES_ASSET], **selection
        )
        transactions = OpenBankingTransactionsOperator(
            task_id="land_transactions",
            lookback=LOOKBACK,
            accounts_from_landing=True,
            # A consent whose accounts did not land is listed (and judged) here again.
            trigger_rule=TriggerRule.ALL_DONE,
            outlets=[TRANSACTIONS_FILES_ASSET],
            **selection,
        )

        @task(
            task_id="load_transactions",
            trigger_rule=TriggerRule.ALL_DONE,
            # Overlapping windows of concurrent runs and shards are loaded one at a time.
            max_active_tis_per_dag=1,
            map_index_template=SHARD_TASK_LABEL,
        )
        def load(
            openbanking_conn_id: str,
            shard_index: int,
            shard_count: int,
            params: dict[str, Any] | None = None,
            data_interval_start: dt.datetime | None = None,
            data_interval_end: dt.datetime | None = None,
        ) -> dict[str, Any]:
            """Window-replace the shard's landed account files into the warehouse table, in bulk."""
            from airflow.sdk import get_current_context

            context: Any = get_current_context()
            context.update(
                openbanking_conn_id=openbanking_conn_id, shard_index=shard_index, shard_count=shard_count
            )
            return load_transactions_shard(
                openbanking_conn_id,
                shard_index,
                shard_count,
                data_interval_start,
                data_interval_end,
                (params or {}).get("warehouse_conn_id") or WAREHOUSE_CONN_ID,
            )

        loaded = load(openbanking_conn_id, shard_index, shard_count)
        accounts >> transactions >> loaded
        loaded >> table
        # Every step of every shard counts for the verdict, not only the group's last one.
        [accounts, transactions, loaded] >> final

    shard.expand_kwargs(plan_shards())


openbanking_accounts_transactions()
