"""
### Open Banking: monthly statements (lists and PDFs)

Once a month, for every consent of every connection in `conn_ids`: land every account's statement
list of the month (JSON Lines) and download each statement's PDF (streamed, written atomically)
under `statement_files/conn_id=…/consent_id=…/interval=…/account_id=…/<statementId>.pdf`.

Mapped over shards of each connection's consents (param `consents_per_shard`), as
`openbanking_accounts_transactions`: **plan_shards**, then one **land_statements** per shard
(`shards + 2` task instances per run), then **all_consents_ok**. A dead consent is recorded in its
shard and does not stop the others; a retry of a shard redoes only the consents that did not land.

API tasks run in the pool `openbanking_api`. Param `conn_ids` as in
`openbanking_accounts_transactions` (empty: Variable `openbanking_conn_ids`, else
`["openbanking_default"]`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, TriggerRule, dag, task

from airflow_provider_openbanking.example_dags_support import (
    default_args,
    landed_asset,
    plan_run_shards,
    shard_operator_args,
    shard_params,
)
from airflow_provider_openbanking.operators.openbanking import OpenBankingStatementsOperator


@dag(
    dag_id="openbanking_statements",
    # Monthly intervals [1st 00:00, next 1st 00:00) UTC; the run starts once the month is over.
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc),
    catchup=True,
    max_active_runs=1,
    default_args=default_args(),
    params=shard_params("one shard (one task instance)"),
    tags=["openbanking", "example"],
    doc_md=__doc__,
)
def openbanking_statements() -> None:
    @task
    def plan_shards(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One entry per shard of every connection's consents."""
        return plan_run_shards(params)

    statements = OpenBankingStatementsOperator.partial(
        task_id="land_statements",
        download=True,
        outlets=[landed_asset("statements"), landed_asset("statement_files")],
        **shard_operator_args(),
    ).expand_kwargs(plan_shards())

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def all_consents_ok() -> None:
        """Runs only if every shard landed every consent: otherwise the run ends failed."""

    statements >> all_consents_ok()


openbanking_statements()
