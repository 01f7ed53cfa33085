"""Window-replace semantics of the warehouse load, on SQLite through the common-sql hook."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking.example_dags_support import (
    load_transactions,
    parse_conn_ids,
    transaction_jobs,
)
from airflow_provider_openbanking.warehouse import (
    TransactionsWarehouse,
    check_identifier,
    transaction_row,
    window_date,
)

ACC = "acc-1"


def posted(txn_id: str, day: str, amount: float, dcm: str = "DEBIT", **extra: Any) -> dict[str, Any]:
    return {
        "accountId": ACC,
        "transactionId": txn_id,
        "postedTimestamp": f"{day}T12:00:00.000Z",
        "transactionTimestamp": f"{day}T09:00:00.000Z",
        "amount": amount,
        "debitCreditMemo": dcm,
        "status": "POSTED",
        **extra,
    }


def pending(txn_id: str, day: str, amount: float) -> dict[str, Any]:
    return {
        "accountId": ACC,
        "transactionId": txn_id,
        "transactionTimestamp": f"{day}T09:00:00.000Z",
        "amount": amount,
        "debitCreditMemo": "DEBIT",
        "status": "PENDING",
    }


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "wh.db"
    monkeypatch.setenv("AIRFLOW_CONN_TEST_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def rows(db: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT transaction_id, status, amount, signed_amount, window_date FROM openbanking_transactions"
        ).fetchall()
    return {r[0]: r[1:] for r in found}


def test_window_date_is_the_date_the_api_filters_on() -> None:
    assert window_date(posted("t", "2026-11-10", 1)) == "2026-11-10"
    assert window_date(pending("p", "2026-11-11", 1)) == "2026-11-11"
    assert window_date({"postedTimestamp": "2026-11-10T23:30:00-05:00"}) == "2026-11-11"  # UTC day
    row = transaction_row("c", ACC, posted("t", "2026-11-10", 12.5))
    assert row[:5] == ("c", "default", ACC, "t", "2026-11-10") and row[9] == -12.5
    assert transaction_row("c", ACC, posted("t", "2026-11-10", 1), "cust-7")[1] == "cust-7"
    with pytest.raises(ValueError, match="transactionId"):
        transaction_row("c", ACC, {"amount": 1})


def test_pending_replaced_by_its_posted_twin_amounts_updated_reruns_idempotent(db: Path) -> None:
    wh = TransactionsWarehouse("test_warehouse")
    first = [posted("t1", "2026-11-10", 10), pending("pt2", "2026-11-11", 20)]
    wh.replace_window("c", ACC, "2026-10-28", "2026-11-11", first)
    assert set(rows(db)) == {"t1", "pt2"}
    snapshot = rows(db)
    wh.replace_window("c", ACC, "2026-10-28", "2026-11-11", first)
    assert rows(db) == snapshot, "same window, same records: table unchanged"

    # Next day: pt2 posted as t2 (with a tip), t1's amount was corrected.
    second = [posted("t1", "2026-11-10", 11), posted("t2", "2026-11-12", 23, referenceTransactionId="pt2")]
    load = wh.replace_window("c", ACC, "2026-10-29", "2026-11-12", second)
    assert load.inserted == 2
    assert rows(db) == {
        "t1": ("POSTED", 11, -11, "2026-11-10"),
        "t2": ("POSTED", 23, -23, "2026-11-12"),
    }
    # Another connection's rows and rows outside the window are left alone.
    wh.replace_window("other", ACC, "2026-11-01", "2026-11-30", [posted("t9", "2026-11-05", 1)])
    wh.replace_window("c", ACC, "2026-11-12", "2026-11-12", [])
    assert set(rows(db)) == {"t1", "t9"}
    assert wh.count("c") == 1 and wh.count() == 2


def test_a_failed_load_rolls_the_whole_window_back(db: Path) -> None:
    wh = TransactionsWarehouse("test_warehouse", create_table=False)
    ddl = wh.ddl().replace("record TEXT,", "record TEXT CHECK (amount < 1000000),")
    with sqlite3.connect(db) as conn:
        conn.execute(ddl)
    wh.replace_window("c", ACC, "2026-11-01", "2026-11-10", [posted("t1", "2026-11-05", 5)])
    with pytest.raises(sqlite3.IntegrityError):
        wh.replace_window("c", ACC, "2026-11-01", "2026-11-10", [posted("t2", "2026-11-06", 5e9)])
    assert set(rows(db)) == {"t1"}


def test_record_of_another_account_and_bad_names_are_refused(db: Path) -> None:
    wh = TransactionsWarehouse("test_warehouse")
    with pytest.raises(ValueError, match="belongs to account"):
        wh.replace_window("c", "acc-2", "2026-11-01", "2026-11-10", [posted("t1", "2026-11-05", 5)])
    with pytest.raises(ValueError, match="after"):
        wh.replace_window("c", ACC, "2026-11-10", "2026-11-01", [])
    assert check_identifier("analytics.openbanking_transactions")
    with pytest.raises(ValueError):
        TransactionsWarehouse("test_warehouse", table="t; DROP TABLE x")


def test_missing_warehouse_connection_says_how_to_create_it() -> None:
    with pytest.raises(RuntimeError, match="AIRFLOW_CONN_NO_SUCH_WAREHOUSE"):
        TransactionsWarehouse("no_such_warehouse").ensure_table()


def test_load_from_operator_results_and_plan_from_accounts_files(db: Path, tmp_path: Path) -> None:
    from airflow_provider_openbanking.landing import to_storage_path, write_jsonl

    base = to_storage_path(str(tmp_path / "landing"))
    txn_file = base / "transactions" / "a.jsonl"
    write_jsonl(txn_file, [posted("t1", "2026-11-05", 5), pending("pt2", "2026-11-06", 6)])
    result = {
        "dataset": "transactions",
        "conn_id": "c",
        "query_start": "2026-10-24",
        "query_end": "2026-11-06",
        "accounts": {ACC: {"records": 2, "pages": 1, "path": str(txn_file)}},
        "skipped": {"acc-9": "704 Account type not supported"},
    }
    # A single XCom value (only one mapped task succeeded) is accepted as well as a list.
    summary = load_transactions(result, "test_warehouse")
    assert summary["windows"] == 1 and summary["inserted"] == 2 and summary["rows"] == 2
    assert load_transactions([result, None], "test_warehouse")["rows"] == 2

    accounts_file = base / "accounts" / "accounts.jsonl"
    write_jsonl(accounts_file, [{"accountId": "acc-b"}, {"accountId": "acc-a"}])
    jobs = transaction_jobs([{"conn_id": "c", "paths": [str(accounts_file)]}, None])
    assert jobs == [
        {"openbanking_conn_id": "c", "account_ids": ["acc-a"]},
        {"openbanking_conn_id": "c", "account_ids": ["acc-b"]},
    ]


def test_parse_conn_ids() -> None:
    assert parse_conn_ids('["a", "b", "a"]') == ["a", "b"]
    assert parse_conn_ids("a, b") == ["a", "b"]
    assert parse_conn_ids(None) == []
    with pytest.raises(ValueError):
        parse_conn_ids([""])
