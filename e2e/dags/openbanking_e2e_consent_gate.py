"""
### e2e only: a consent gate in front of one consent's work

`make e2e`'s own DAG (its DAG bundle `e2e`, next to the example DAGs): the deferrable
`OpenBankingTokenSensor` waits for the consent of connection `openbanking_customer_3`, whose bank
gateway is down when the e2e triggers this DAG, then that consent's accounts land. The example
DAGs check consents inside their shards and have no sensor task; this one keeps the sensor, its
trigger and the triggerer under test.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from airflow_provider_openbanking.example_dags_support import POOL, consent_sensor
from airflow_provider_openbanking.operators.openbanking import OpenBankingAccountsOperator

CONN_ID = "openbanking_customer_3"


@dag(
    dag_id="openbanking_e2e_consent_gate",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["openbanking", "e2e"],
    doc_md=__doc__,
)
def openbanking_e2e_consent_gate() -> None:
    # A deferred sensor can be marked failed when its trigger fires before the scheduler saw the
    # deferral (apache/airflow#67287): one retry covers that; the e2e also waits for the
    # scheduler to register the deferral before the gateway comes back.
    wait = consent_sensor(CONN_ID, retries=1)
    accounts = OpenBankingAccountsOperator(
        task_id="land_accounts", openbanking_conn_id=CONN_ID, result_type="details", pool=POOL
    )
    wait >> accounts


openbanking_e2e_consent_gate()
