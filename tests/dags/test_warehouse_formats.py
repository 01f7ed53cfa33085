"""The warehouse load and the transactions plan read every landing format (issue 18), on SQLite
through the common-sql hook: the same window landed as jsonl, jsonl.gz and parquet loads the same
rows."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking.example_dags_support import load_transactions, transaction_jobs
from airflow_provider_openbanking.landing import FILE_FORMATS, Layout, to_storage_path, write_records
from airflow_provider_openbanking.sandbox.data import Bank

UTC = dt.timezone.utc
START, END = dt.datetime(2026, 11, 19, tzinfo=UTC), dt.datetime(2026, 11, 20, tzinfo=UTC)


def sandbox_transactions() -> tuple[str, list[dict[str, Any]]]:
    """One account's transactions as the sandbox serves them, pending ones included."""
    bank = Bank(customers=1, accounts_per_customer=2, transactions_per_account=400)
    account = bank.customers[0].accounts[1]
    series = bank.series(account, 400)
    return account.account_id, [series.record(i, pending=i % 25 == 0) for i in range(400)]


def table(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM openbanking_transactions ORDER BY 1, 2, 3").fetchall()


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_every_format_loads_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    account_id, records = sandbox_transactions()
    dbs = {}
    for label in ("jsonl", fmt):  # plain JSON Lines is the reference, loaded in the same test
        db = tmp_path / f"{label}.db"
        monkeypatch.setenv("AIRFLOW_CONN_WH_FORMATS", json.dumps({"conn_type": "sqlite", "host": str(db)}))
        layout = Layout(
            to_storage_path(str(tmp_path / label)), "transactions", "c", START, END, file_format=label
        )
        path = layout.records_file(account_id)
        write_records(path, records, dataset="transactions")
        result = {
            "conn_id": "c",
            "query_start": "2026-08-23",
            "query_end": "2026-11-20",
            "accounts": {account_id: {"records": len(records), "pages": 1, "path": str(path)}},
        }
        summary = load_transactions(result, "wh_formats")
        assert summary["inserted"] == len(records) == summary["rows"]
        dbs[label] = db
    rows = table(dbs[fmt])
    assert rows == table(dbs["jsonl"])
    # the record column keeps every field the bank sent, in every format
    assert sorted(json.loads(r[-1])["transactionId"] for r in rows) == sorted(
        r["transactionId"] for r in records
    )


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_transactions_plan_reads_the_accounts_file_in_any_format(tmp_path: Path, fmt: str) -> None:
    layout = Layout(to_storage_path(str(tmp_path)), "accounts", "c", START, END, file_format=fmt)
    path = layout.records_file()
    write_records(
        path, [{"accountId": "acc-b", "accountCategory": "DEPOSIT_ACCOUNT"}, {"accountId": "acc-a"}]
    )
    assert transaction_jobs([{"conn_id": "c", "paths": [str(path)]}]) == [
        {"openbanking_conn_id": "c", "account_ids": ["acc-a"]},
        {"openbanking_conn_id": "c", "account_ids": ["acc-b"]},
    ]
