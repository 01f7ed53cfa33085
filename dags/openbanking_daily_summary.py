"""
### Open Banking: daily spend summary, downstream of the transactions table

Scheduled on the Asset `openbanking_transactions`, which `openbanking_accounts_transactions`
emits each time its load step has brought the warehouse table up to date: no cron, no sensor --
this DAG runs when there are new transactions.

It rebuilds `openbanking_daily_summary` (per connection, account and day: number of transactions,
pending ones, credits, debits, net) from `openbanking_transactions`, in one database transaction,
through the same SQL connection (`openbanking_warehouse` by default).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from airflow_provider_openbanking.example_dags_support import (
    SUMMARY_TABLE,
    TRANSACTIONS_TABLE_ASSET,
    WAREHOUSE_CONN_ID,
    summary_sql,
)
from airflow_provider_openbanking.warehouse import TransactionsWarehouse


@dag(
    dag_id="openbanking_daily_summary",
    schedule=[TRANSACTIONS_TABLE_ASSET],
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "analytics", "retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    params={
        "warehouse_conn_id": Param(
            WAREHOUSE_CONN_ID, type="string", description="SQL connection of the warehouse tables."
        ),
    },
    tags=["openbanking", "example"],
    doc_md=__doc__,
)
def openbanking_daily_summary() -> None:
    @task(outlets=[Asset(name=SUMMARY_TABLE, uri=f"sql://{SUMMARY_TABLE}", group="openbanking")])
    def summarize(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rebuild the daily summary table from the transactions table."""
        warehouse = TransactionsWarehouse((params or {}).get("warehouse_conn_id") or WAREHOUSE_CONN_ID)
        warehouse.ensure_table()
        warehouse.hook.run(list(summary_sql(warehouse.table, SUMMARY_TABLE)), autocommit=False)
        row = warehouse.hook.get_first(f"SELECT COUNT(*), COALESCE(SUM(debits), 0) FROM {SUMMARY_TABLE}")
        return {"table": SUMMARY_TABLE, "rows": int(row[0]), "total_debits": float(row[1])}

    summarize()


openbanking_daily_summary()
