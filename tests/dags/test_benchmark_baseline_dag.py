"""The 0.x per-consent DAG that ``benchmarks/moonshot.py`` runs as its baseline still runs on
today's package: a real ``dag.test()`` over two consents (one connection each) against the sandbox.

It must keep the 0.x shape the baseline stands for -- mapped over consents, then over every
(consent, account) pair -- and land and load every account, so that the benchmark compares the
sharded DAG with a working per-consent DAG rather than with one that fails early.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

DAG_ID = "openbanking_per_consent_baseline"
DAG_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "dags"
LOGICAL = dt.datetime(2026, 11, 18, tzinfo=dt.timezone.utc)


def test_the_per_consent_baseline_lands_and_loads_every_account(
    sandbox: Any, make_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    db = tmp_path / "warehouse.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENBANKING_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(db)})
    )
    monkeypatch.setenv("AIRFLOW__OPENBANKING__LANDING_DESTINATION", str(tmp_path / "landing"))
    # dag.test() finds the DAG through the configured bundles: add benchmarks/dags to dags/.
    bundles = [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path)},
        }
        for name, path in (("dags-folder", DAG_DIR.parents[1] / "dags"), ("benchmarks", DAG_DIR))
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    Pool.create_or_update_pool("openbanking_api", 4, "Open Banking API calls", include_deferred=False)
    bag = DagBag(dag_folder=str(DAG_DIR))
    assert bag.import_errors == {}
    customers = {"openbanking_base_1": "cust-0001", "openbanking_base_2": "cust-0002"}
    conn_ids = [make_conn(conn_id, customer_id=customer) for conn_id, customer in customers.items()]
    accounts = {c: {a["accountId"] for a in sandbox.truth_accounts(cust)} for c, cust in customers.items()}
    sandbox.configure(now=(LOGICAL + dt.timedelta(minutes=5)).isoformat())

    dagrun = bag.get_dag(DAG_ID).test(logical_date=LOGICAL, run_conf={"conn_ids": conn_ids})

    with create_session() as session:
        tis = dagrun.get_task_instances(session=session)
        per_task = Counter(ti.task_id for ti in tis)
        failed = [(ti.task_id, ti.map_index, ti.state) for ti in tis if str(ti.state) != "success"]
        load = next(ti for ti in tis if ti.task_id == "load_transactions").xcom_pull(
            task_ids="load_transactions", session=session
        )
    assert str(dagrun.state) in ("success", "DagRunState.SUCCESS"), failed
    n_accounts = sum(len(a) for a in accounts.values())
    assert per_task["consent.wait_for_consent"] == per_task["consent.land_accounts"] == 2
    assert per_task["land_transactions"] == n_accounts  # one task instance per (consent, account)
    assert load["windows"] == n_accounts and load["seconds"] > 0
    with sqlite3.connect(db) as conn:
        loaded = set(conn.execute("SELECT DISTINCT conn_id, account_id FROM openbanking_transactions"))
    assert loaded == {(c, a) for c, ids in accounts.items() for a in ids}
