"""End to end: ``openbanking_accounts_transactions`` against the sandbox, into a SQLite warehouse.

Two connections (one consent each), two consecutive daily intervals (the bank clock just after each interval's end, so
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
    # Mapped over shards (one per connection here), not over consents nor accounts.
    assert [k for k in task_states if k[0] == "shard.land_transactions"] == [
        ("shard.land_transactions", 0),
        ("shard.land_transactions", 1),
    ]
    assert len(task_states) == 3 * 2 + 3
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
    # The unknown connection's shard fails naming it; the good one's shard lands and loads.
    assert task_states[("shard.land_accounts", 1)] == "failed"
    assert task_states[("shard.land_transactions", 1)] == "failed"
    assert task_states[("shard.load_transactions", 1)] == "success"  # nothing to load
    assert task_states[("shard.load_transactions", 0)] == "success"
    assert task_states[("table_updated", -1)] == "success"
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


def import_consents(conn_id: str, tokens: dict[str, str], tmp_path: Path) -> None:
    """``airflow-openbanking consents import --conn-id C FILE``, in-process."""
    import io

    from airflow_provider_openbanking import cli

    path = tmp_path / "consents.jsonl"
    path.write_text(
        "".join(json.dumps({"consent_id": c, "refresh_token": t}) + "\n" for c, t in tokens.items())
    )
    err = io.StringIO()
    assert (
        cli.main(["consents", "import", "--conn-id", conn_id, str(path)], stdout=io.StringIO(), stderr=err)
        == 0
    ), err.getvalue()


def test_many_consents_of_one_connection_in_shards(
    sandbox: Any, make_conn: Any, main_dag: Any, warehouse: Path, tmp_path: Path
) -> None:
    """Nine consents of one connection (its default one and eight imported; one of them revoked
    at the bank) in shards of about three: every live consent's accounts and transactions are in
    the table under its consent id, the run fails naming the revoked one, and the number of task
    instances is 3 per shard + 3."""
    from airflow_provider_openbanking.batch import shard_count_for, shard_of

    conn_id = make_conn("openbanking_default", customer_id="cust-0001")
    customers = ["cust-0001", "cust-0002", "cust-0003"]
    tokens = {f"k{i}": sandbox.grant_consent(customers[i % 3]) for i in range(8)}
    import_consents(conn_id, tokens, tmp_path)
    sandbox.revoke_consent(refresh_token=tokens["k5"], at_bank=True)
    consents = ["default", *tokens]
    shards = shard_count_for(len(consents), 3)
    sandbox.configure(now=(SECOND + dt.timedelta(minutes=5)).isoformat())
    dagrun = main_dag.test(logical_date=SECOND, run_conf={"conn_ids": [conn_id], "consents_per_shard": 3})
    task_states = states(dagrun)
    assert str(dagrun.state) in ("failed", "DagRunState.FAILED"), task_states
    assert len(task_states) == 3 * shards + 3, task_states
    revoked_shard = shard_of("k5", shards)
    assert task_states[("shard.land_accounts", revoked_shard)] == "failed"
    assert all(task_states[("shard.load_transactions", k)] == "success" for k in range(shards))
    with sqlite3.connect(warehouse) as db:
        loaded = {
            (consent, account): count
            for consent, account, count in db.execute(
                "SELECT consent_id, account_id, COUNT(*) FROM openbanking_transactions GROUP BY 1, 2"
            )
        }
    customer_of = {"default": "cust-0001", **{c: customers[i % 3] for i, c in enumerate(tokens)}}
    start, end = (
        (interval_of(SECOND)[0] - LOOKBACK).date(),
        (interval_of(SECOND)[1] - dt.timedelta(days=1)).date(),
    )
    for consent in consents:
        for account in sandbox.truth_accounts(customer_of[consent]):
            truth = sandbox.truth_transactions(account["accountId"], start, end)
            if consent == "k5":
                assert (consent, account["accountId"]) not in loaded
            elif truth:
                assert loaded[(consent, account["accountId"])] == len(truth), (consent, account["accountId"])


def test_a_plan_longer_than_max_map_length_fails_at_once(
    sandbox: Any,
    make_conn: Any,
    main_dag: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    conn_id = make_conn("openbanking_default", customer_id="cust-0001")
    import_consents(conn_id, {f"k{i}": sandbox.grant_consent("cust-0002") for i in range(4)}, tmp_path)
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    dagrun = main_dag.test(logical_date=SECOND, run_conf={"conn_ids": [conn_id], "consents_per_shard": 1})
    from airflow.utils.session import create_session

    with create_session() as session:
        (plan,) = [ti for ti in dagrun.get_task_instances(session=session) if ti.task_id == "plan_shards"]
        assert str(getattr(plan.state, "value", plan.state)) == "failed"
        assert plan.try_number == 1, "not retried: retrying cannot make the list shorter"
    # The message itself (length, limit, setting, the consents_per_shard hint) is asserted where it
    # is raised (tests/test_batch_shards.py, and below on the guard the DAG calls): after other
    # dag.test() runs in this process the task's log no longer reaches pytest's capture.
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_openbanking.batch import check_map_length

    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    with pytest.raises(
        AirflowFailException,
        match=r"the shard plan: 5 item\(s\) to map over, more than \[core\] max_map_length = 3",
    ):
        check_map_length(range(5), "the shard plan")
