"""
### Open Banking: monthly statements (lists and PDFs)

Once a month, for each consent (one `openbanking` connection per consent): wait for a usable
consent, then land every account's statement list of the month (JSON Lines) and download each
statement's PDF (streamed, written atomically) under
`statement_files/conn_id=…/interval=…/account_id=…/<statementId>.pdf`.

API tasks run in the pool `openbanking_api`. Param `conn_ids` as in
`openbanking_accounts_transactions` (empty: Variable `openbanking_conn_ids`, else
`["openbanking_default"]`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task, task_group

from airflow_provider_openbanking.example_dags_support import (
    POOL,
    consent_sensor,
    landed_asset,
    resolve_conn_ids,
)
from airflow_provider_openbanking.operators.openbanking import OpenBankingStatementsOperator


@dag(
    dag_id="openbanking_statements",
    # Monthly intervals [1st 00:00, next 1st 00:00) UTC; the run starts once the month is over.
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc),
    catchup=True,
    max_active_runs=1,
    default_args={
        "owner": "data-engineering",
        "retries": 3,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": True,
    },
    params={
        "conn_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            description="openbanking connection ids, one per consent. Empty: the Variable "
            "openbanking_conn_ids (JSON list), else ['openbanking_default'].",
        ),
    },
    tags=["openbanking", "example"],
    doc_md=__doc__,
)
def openbanking_statements() -> None:
    @task
    def consent_conn_ids(params: dict[str, Any] | None = None) -> list[str]:
        """The connections (consents) this run covers."""
        return resolve_conn_ids((params or {}).get("conn_ids"))

    @task_group(group_id="consent")
    def consent(conn_id: str) -> None:
        """Per consent: wait for a usable consent, then land the month's statements and files."""
        statements = OpenBankingStatementsOperator(
            task_id="land_statements",
            openbanking_conn_id=conn_id,
            download=True,
            pool=POOL,
            outlets=[landed_asset("statements"), landed_asset("statement_files")],
        )
        consent_sensor(conn_id) >> statements

    consent.expand(conn_id=consent_conn_ids())


openbanking_statements()
