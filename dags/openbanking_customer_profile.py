"""
### Open Banking: customer profile -- customer, contacts, payment networks, holdings

Once a week, for every consent of every connection in `conn_ids`, mapped over shards of each
connection's consents (param `consents_per_shard`, as in `openbanking_accounts_transactions`),
land in parallel per shard

- the customer (`/customers/current`),
- each account's holders and contact details (`/accounts/{id}/contact`),
- each account's payment networks (`/accounts/{id}/payment-networks`; full account numbers are
  masked to their last four digits),
- the investment accounts' holdings.

These are snapshots: each weekly run lands the current state under its own interval. One task
instance per dataset and shard (`4 x shards + 2` per run, whatever the number of consents); a
dead consent is recorded in its shard and does not stop the others. API tasks run in the pool
`openbanking_api`. Param `conn_ids` as in `openbanking_accounts_transactions`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, TriggerRule, dag, task, task_group

from airflow_provider_openbanking.example_dags_support import (
    default_args,
    landed_asset,
    plan_run_shards,
    shard_operator_args,
    shard_params,
)
from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountContactOperator,
    OpenBankingCustomerOperator,
    OpenBankingHoldingsOperator,
    OpenBankingPaymentNetworksOperator,
)


@dag(
    dag_id="openbanking_customer_profile",
    # Weekly intervals, Monday 00:00 UTC to Monday 00:00 UTC. Snapshots: no catchup.
    schedule=CronDataIntervalTimetable("0 0 * * 1", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params=shard_params("one shard (one task instance per dataset)"),
    tags=["openbanking", "example"],
    doc_md=__doc__,
)
def openbanking_customer_profile() -> None:
    @task
    def plan_shards(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One entry per shard of every connection's consents."""
        return plan_run_shards(params)

    @task_group(group_id="shard")
    def shard(openbanking_conn_id: str, shard_index: int, shard_count: int) -> None:
        """Per shard: land the profile datasets of its consents, in parallel."""
        common = shard_operator_args(
            openbanking_conn_id=openbanking_conn_id, shard_index=shard_index, shard_count=shard_count
        )
        OpenBankingCustomerOperator(task_id="land_customer", outlets=[landed_asset("customer")], **common)
        OpenBankingAccountContactOperator(
            task_id="land_contacts", outlets=[landed_asset("contacts")], **common
        )
        OpenBankingPaymentNetworksOperator(
            task_id="land_payment_networks", outlets=[landed_asset("payment_networks")], **common
        )
        OpenBankingHoldingsOperator(task_id="land_holdings", outlets=[landed_asset("holdings")], **common)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def all_consents_ok() -> None:
        """Runs only if every shard landed every consent: otherwise the run ends failed."""

    shard.expand_kwargs(plan_shards()) >> all_consents_ok()


openbanking_customer_profile()
