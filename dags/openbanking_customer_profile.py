"""
### Open Banking: customer profile -- customer, contacts, payment networks, holdings

Once a week, for each consent (one `openbanking` connection per consent): wait for a usable
consent, then land in parallel

- the customer (`/customers/current`),
- each account's holders and contact details (`/accounts/{id}/contact`),
- each account's payment networks (`/accounts/{id}/payment-networks`; full account numbers are
  masked to their last four digits),
- the investment accounts' holdings.

These are snapshots: each weekly run lands the current state under its own interval. API tasks run
in the pool `openbanking_api`. Param `conn_ids` as in `openbanking_accounts_transactions`.
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
def openbanking_customer_profile() -> None:
    @task
    def consent_conn_ids(params: dict[str, Any] | None = None) -> list[str]:
        """The connections (consents) this run covers."""
        return resolve_conn_ids((params or {}).get("conn_ids"))

    @task_group(group_id="consent")
    def consent(conn_id: str) -> None:
        """Per consent: wait for a usable consent, then land the profile datasets in parallel."""
        common: dict[str, Any] = {"openbanking_conn_id": conn_id, "pool": POOL}
        consent_sensor(conn_id) >> [
            OpenBankingCustomerOperator(
                task_id="land_customer", outlets=[landed_asset("customer")], **common
            ),
            OpenBankingAccountContactOperator(
                task_id="land_contacts", outlets=[landed_asset("contacts")], **common
            ),
            OpenBankingPaymentNetworksOperator(
                task_id="land_payment_networks", outlets=[landed_asset("payment_networks")], **common
            ),
            OpenBankingHoldingsOperator(
                task_id="land_holdings", outlets=[landed_asset("holdings")], **common
            ),
        ]

    consent.expand(conn_id=consent_conn_ids())


openbanking_customer_profile()
