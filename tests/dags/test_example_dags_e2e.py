"""End to end: ``openbanking_accounts_transactions`` against the sandbox, into a SQLite warehouse.

Two consents, two consecutive daily intervals (the bank clock just after each interval's end, so
transactions that were pending in the first run have posted by the second), then a rerun of the
first interval. The table must then hold exactly what the bank reports for the windows the runs
covered: every posted transaction once, no pending one that has since posted, equal amounts --
and the rerun must leave it unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking.landing import read_records

pytestmark = pytest.mark.slow

UTC = dt.timezone.utc
DAG_ID = "openbanking_accounts_transactions"
LOOKBACK = dt.timedelta(days=14)
#: Logical dates given to ``dag.test``: with CronDataIntervalTimetable a manual run at midnight
#: covers the day before, so these are the intervals [11-16, 11-17) and [11-17, 11-18).
FIRST, SECOND = dt.datetime(2026, 11, 17, tzinfo=UTC), dt.datetime(2026, 11, 18, tzinfo=UTC)
CUSTOMERS = {"openbanking_default": "cust-0001", "openbanking_second": "cust-0002"}


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "warehouse.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENBANKING_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(db)})
    )
    monkeypatch.setenv("AIRFLOW__OPENBANKING__LANDING_DESTINATION", str(tmp_path / "landing"))
    return db


@pytest.fixture(scope="module")
def api_pool() -> Iterator[None]:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("openbanking_api", 4, "Open Banking API calls", include_deferred=False)
    yield


@pytest.fixture
def dagbag(warehouse: Path, api_pool: None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture
def main_dag(dagbag: Any) -> Any:
    return dagbag.get_dag(DAG_ID)


def succeeded(dagrun: Any) -> bool:
    return str(dagrun.state) in ("success", "DagRunState.SUCCESS")


def interval_of(logical_date: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    return logical_date - dt.timedelta(days=1), logical_date


def run(dag: Any, sandbox: Any, logical_date: dt.datetime, conn_ids: list[str], *, clock: bool = True) -> Any:
    """Run the DAG for the interval ending at ``logical_date``; first move the bank clock to just
    after the interval's end (unless ``clock=False``: a rerun happens later, the clock stays)."""
    if clock:
        sandbox.configure(now=(logical_date + dt.timedelta(minutes=5)).isoformat())
    dagrun = dag.test(logical_date=logical_date, run_conf={"conn_ids": conn_ids})
    return dagrun


def states(dagrun: Any) -> dict[tuple[str, int], str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state))
            for ti in dagrun.get_task_instances(session=session)
        }


def table(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM openbanking_transactions ORDER BY 1, 2, 3").fetchall()


def rows_by_account(db: Path) -> dict[tuple[str, str], dict[str, tuple[str, float, str]]]:
    out: dict[tuple[str, str], dict[str, tuple[str, float, str]]] = {}
    with sqlite3.connect(db) as conn:
        for conn_id, account_id, txn_id, status, amount, day in conn.execute(
            "SELECT conn_id, account_id, transaction_id, status, amount, window_date FROM openbanking_transactions"
        ):
            out.setdefault((conn_id, account_id), {})[txn_id] = (status, float(amount), day)
    return out


def test_two_intervals_and_a_rerun_match_the_bank(
    sandbox: Any, make_conn: Any, dagbag: Any, main_dag: Any, warehouse: Path
) -> None:
    conn_ids = [make_conn(conn_id, customer_id=customer) for conn_id, customer in CUSTOMERS.items()]
    accounts = {
        conn_id: [a["accountId"] for a in sandbox.truth_accounts(customer)]
        for conn_id, customer in CUSTOMERS.items()
    }

    first = run(main_dag, sandbox, FIRST, conn_ids)
    assert succeeded(first), states(first)
    task_states = states(first)
    transactions = [k for k in task_states if k[0] == "land_transactions"]
    assert len(transactions) == sum(len(a) for a in accounts.values()), "one mapped task per account"
    after_first = rows_by_account(warehouse)
    pending_first = {
        (key, txn_id)
        for key, rows in after_first.items()
        for txn_id, row in rows.items()
        if row[0] == "PENDING"
    }
    assert pending_first, "the first interval should end with pending transactions"

    second = run(main_dag, sandbox, SECOND, conn_ids)
    assert succeeded(second), states(second)
    before_rerun = table(warehouse)

    rerun = run(main_dag, sandbox, FIRST, conn_ids, clock=False)
    assert succeeded(rerun), states(rerun)
    assert table(warehouse) == before_rerun, "rerunning an interval must leave the table unchanged"

    # The windows the runs covered: [first start - lookback, last day of the second interval].
    window_start = (interval_of(FIRST)[0] - LOOKBACK).date()
    window_end = (interval_of(SECOND)[1] - dt.timedelta(days=1)).date()
    loaded = rows_by_account(warehouse)
    posted_since = 0
    for conn_id, account_ids in accounts.items():
        for account_id in account_ids:
            truth = {
                t["transactionId"]: t
                for t in sandbox.truth_transactions(account_id, window_start, window_end)
            }
            rows = loaded.get((conn_id, account_id), {})
            assert set(rows) == set(truth), (conn_id, account_id)
            for txn_id, (status, amount, _day) in rows.items():
                assert amount == pytest.approx(float(truth[txn_id]["amount"]), abs=1e-9), txn_id
                assert status == truth[txn_id]["status"], txn_id
            posted = [t for t in truth.values() if t["status"] == "POSTED"]
            assert len({t["transactionId"] for t in posted}) == len(posted)
            # A pending transaction of the first run that has posted since is gone; its posted
            # twin (referenceTransactionId = the pending id) is there once.
            twins = {t.get("referenceTransactionId"): t["transactionId"] for t in posted}
            for key, pending_id in pending_first:
                if key == (conn_id, account_id) and pending_id in twins:
                    posted_since += 1
                    assert pending_id not in rows
                    assert twins[pending_id] in rows
    assert posted_since > 0, "some transactions pending in the first run must have posted by the second"
    assert sum(len(r) for r in loaded.values()) > 500

    # The downstream DAG (scheduled on the table's Asset) summarises what was loaded.
    summary = dagbag.get_dag("openbanking_daily_summary").test(logical_date=SECOND)
    assert succeeded(summary), states(summary)
    with sqlite3.connect(warehouse) as conn:
        expected = conn.execute(
            "SELECT COUNT(DISTINCT conn_id || '/' || account_id || '/' || window_date), "
            "ROUND(SUM(CASE WHEN signed_amount < 0 THEN -signed_amount ELSE 0 END), 2) "
            "FROM openbanking_transactions"
        ).fetchone()
        got = conn.execute("SELECT COUNT(*), ROUND(SUM(debits), 2) FROM openbanking_daily_summary").fetchone()
    assert got[0] == expected[0] and got[1] == pytest.approx(expected[1])


def test_one_failing_consent_does_not_stop_the_others(
    sandbox: Any, make_conn: Any, main_dag: Any, warehouse: Path
) -> None:
    good = make_conn("openbanking_default", customer_id="cust-0001")
    dagrun = run(main_dag, sandbox, SECOND, [good, "openbanking_not_configured"])
    task_states = states(dagrun)
    assert str(dagrun.state) in ("failed", "DagRunState.FAILED"), task_states
    assert task_states[("consent.wait_for_consent", 1)] == "failed"
    assert task_states[("consent.land_accounts", 1)] == "upstream_failed"
    assert task_states[("load_transactions", -1)] == "success"
    assert task_states[("all_consents_ok", -1)] == "upstream_failed"
    loaded = rows_by_account(warehouse)
    assert {key[0] for key in loaded} == {good}
    assert sum(len(r) for r in loaded.values()) > 100


def test_statements_and_customer_profile_dags_land_their_datasets(
    sandbox: Any, make_conn: Any, dagbag: Any, tmp_path: Path
) -> None:
    make_conn("openbanking_default", customer_id="cust-0001")
    landing = tmp_path / "landing"

    statements = dagbag.get_dag("openbanking_statements").test(
        logical_date=dt.datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert succeeded(statements), states(statements)
    pdfs = sorted((landing / "statement_files").rglob("*.pdf"))
    assert pdfs and all(p.read_bytes().startswith(b"%PDF") for p in pdfs)
    assert all("interval=20261001T000000Z_20261101T000000Z" in str(p) for p in pdfs)
    assert list((landing / "statements").rglob("account_id=*.jsonl.gz"))

    profile = dagbag.get_dag("openbanking_customer_profile").test(
        logical_date=dt.datetime(2026, 11, 16, tzinfo=UTC)
    )
    assert succeeded(profile), states(profile)
    for dataset in ("customer", "contacts", "payment_networks", "holdings"):
        assert list((landing / dataset).rglob("*.jsonl.gz")), dataset
    customer = read_records(str(next((landing / "customer").rglob("*.jsonl.gz"))))[0]
    assert customer["customerId"] == "cust-0001"
