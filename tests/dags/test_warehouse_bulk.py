"""The consent-aware warehouse table: migration of the old schema, bulk window replace, one
shard's load from its manifest -- on SQLite and on a real PostgreSQL (``e2e/services.py``)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking.example_dags_support import load_transactions_shard, shard_manifest
from airflow_provider_openbanking.landing import write_jsonl
from airflow_provider_openbanking.warehouse import (
    LEGACY_0X_DDL,
    MigrationRequiredError,
    TransactionsWarehouse,
    Window,
)

UTC = dt.timezone.utc


def posted(account: str, txn_id: str, day: str, amount: float) -> dict[str, Any]:
    return {
        "accountId": account,
        "transactionId": txn_id,
        "postedTimestamp": f"{day}T12:00:00.000Z",
        "transactionTimestamp": f"{day}T09:00:00.000Z",
        "amount": amount,
        "debitCreditMemo": "DEBIT",
        "status": "POSTED",
    }


@pytest.fixture
def sqlite_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "wh.db"
    monkeypatch.setenv("AIRFLOW_CONN_TEST_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from e2e.services import start_postgres

    with start_postgres(tmp_path_factory.mktemp("pg")) as pg:
        yield pg


@pytest.fixture
def pg_conn(postgres: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    name = "wh_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    url = postgres.create_database(name)
    rest = url.split("://", 1)[1]
    user, _, hostpart = rest.partition("@")
    hostport, _, database = hostpart.partition("/")
    host, _, port = hostport.partition(":")
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEST_WAREHOUSE",
        json.dumps(
            {"conn_type": "postgres", "host": host, "port": int(port), "login": user, "schema": database}
        ),
    )
    return "test_warehouse"


def table_rows(wh: TransactionsWarehouse) -> list[tuple[Any, ...]]:
    return [
        (*(str(v) for v in row[:5]), f"{float(row[5]):.2f}")
        for row in wh.hook.get_records(
            "SELECT conn_id, consent_id, account_id, transaction_id, window_date, amount "
            "FROM openbanking_transactions ORDER BY 1, 2, 3, 4"
        )
    ]


def run_migration_case(wh: TransactionsWarehouse, execute: Any) -> None:
    execute(LEGACY_0X_DDL)
    execute(
        "INSERT INTO openbanking_transactions (conn_id, account_id, transaction_id, window_date, amount) "
        "VALUES ('c', 'acc-1', 't1', '2026-11-05', 5)"
    )
    # The first load migrates: old rows become the 'default' consent's, a new consent's rows with
    # the same account and transaction ids no longer collide with them.
    wh.replace_window(
        "c",
        "acc-1",
        "2026-11-01",
        "2026-11-10",
        [posted("acc-1", "t1", "2026-11-05", 7)],
        consent_id="cust-2",
    )
    assert table_rows(wh) == [
        ("c", "cust-2", "acc-1", "t1", "2026-11-05", "7.00"),
        ("c", "default", "acc-1", "t1", "2026-11-05", "5.00"),
    ]
    # Reloading the default consent's window replaces its row only.
    wh.replace_window("c", "acc-1", "2026-11-01", "2026-11-10", [posted("acc-1", "t1", "2026-11-05", 6)])
    assert [r[1] + ":" + r[5] for r in table_rows(wh)] == ["cust-2:7.00", "default:6.00"]


def test_sqlite_table_of_the_old_schema_is_migrated_on_first_load(sqlite_db: Path) -> None:
    def execute(sql: str) -> None:
        with sqlite3.connect(sqlite_db) as conn:
            conn.execute(sql)

    wh = TransactionsWarehouse("test_warehouse")
    run_migration_case(wh, execute)
    with sqlite3.connect(sqlite_db) as conn:
        pk = [
            r[1]
            for r in sorted(conn.execute("PRAGMA table_info(openbanking_transactions)"), key=lambda r: r[5])
            if r[5]
        ]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert pk == ["conn_id", "consent_id", "account_id", "transaction_id"]
    assert "openbanking_transactions__migrating" not in tables


def test_postgres_table_of_the_old_schema_is_migrated_on_first_load(pg_conn: str) -> None:
    wh = TransactionsWarehouse(pg_conn)
    run_migration_case(wh, lambda sql: wh.hook.run(sql, autocommit=True))
    pk = wh.hook.get_records(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'openbanking_transactions'::regclass "
        "AND i.indisprimary"
    )
    assert {r[0] for r in pk} == {"conn_id", "consent_id", "account_id", "transaction_id"}


def test_without_create_table_the_load_names_the_statements_to_run(sqlite_db: Path) -> None:
    with sqlite3.connect(sqlite_db) as conn:
        conn.execute(LEGACY_0X_DDL)
    wh = TransactionsWarehouse("test_warehouse", create_table=False)
    with pytest.raises(MigrationRequiredError) as info:
        wh.replace_window("c", "acc-1", "2026-11-01", "2026-11-10", [])
    message = str(info.value)
    for statement in wh.migration_sql():
        assert statement in message
    assert "consent_id" in message and "create_table" in message
    # The statements as printed do the migration.
    with sqlite3.connect(sqlite_db) as conn:
        conn.executescript("BEGIN;\n" + ";\n".join(wh.migration_sql()) + ";\nCOMMIT;")
    TransactionsWarehouse("test_warehouse", create_table=False).replace_window(
        "c", "acc-1", "2026-11-01", "2026-11-10", [posted("acc-1", "t1", "2026-11-02", 1)]
    )


def windows(consents: int, accounts: int, per_window: int, amount: float = 1.0) -> list[Window]:
    out = []
    for c in range(consents):
        for a in range(accounts):
            account = f"acc-{c}-{a}"
            records = [
                posted(account, f"t{i}", f"2026-11-{1 + i % 14:02d}", amount + i) for i in range(per_window)
            ]
            out.append(Window("c", f"cust-{c}", account, "2026-11-01", "2026-11-14", records))
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bulk_replace_equals_window_by_window_and_is_idempotent(
    backend: str, request: pytest.FixtureRequest
) -> None:
    conn_id = "test_warehouse"
    request.getfixturevalue("sqlite_db" if backend == "sqlite" else "pg_conn")
    wh = TransactionsWarehouse(conn_id)
    first = wh.replace_windows(windows(6, 5, 20), windows_per_transaction=7)
    assert (first.windows, first.inserted, first.deleted) == (30, 600, 0)
    assert first.transactions == 5  # 30 windows, 7 per database transaction
    snapshot = table_rows(wh)
    again = wh.replace_windows(windows(6, 5, 20))
    assert (again.inserted, again.deleted) == (600, 600) and table_rows(wh) == snapshot
    # New data for the window: fewer transactions, other amounts -- the window is replaced.
    wh.replace_windows(windows(6, 5, 10, amount=2.0))
    rows = table_rows(wh)
    assert len(rows) == 300 and {r[5] for r in rows if r[3] == "t0"} == {"2.00"}
    # The same done window by window gives the same table.
    for window in windows(6, 5, 10, amount=2.0):
        wh.replace_window(
            window.conn_id,
            window.account_id,
            window.window_start,
            window.window_end,
            window.records,
            consent_id=window.consent_id,
        )
    assert table_rows(wh) == rows


def test_a_bad_window_is_refused_alone_and_its_rows_stay(sqlite_db: Path) -> None:
    wh = TransactionsWarehouse("test_warehouse")
    wh.replace_windows(windows(1, 2, 3))
    bad = Window(
        "c", "cust-0", "acc-0-0", "2026-11-01", "2026-11-14", [{"transactionId": "x", "amount": "lots"}]
    )
    good = windows(1, 2, 1)[1]
    result = wh.replace_windows([bad, good])
    assert result.windows == 1 and len(result.refused) == 1 and "amount" in result.refused[0]
    rows = table_rows(wh)
    assert len([r for r in rows if r[2] == "acc-0-0"]) == 3, "the refused window kept its rows"
    assert len([r for r in rows if r[2] == "acc-0-1"]) == 1


def test_a_shards_load_reads_its_manifest(sqlite_db: Path, tmp_path: Path) -> None:
    start, end = dt.datetime(2026, 11, 19, tzinfo=UTC), dt.datetime(2026, 11, 20, tzinfo=UTC)
    dest = str(tmp_path / "landing")
    manifest = shard_manifest("transactions", "c", 1, 3, start, end, dest)
    files = []
    for window in windows(2, 2, 4):
        path = manifest.parent / f"{window.account_id}.jsonl"
        write_jsonl(path, window.records)
        files.append(
            {
                "consent_id": window.consent_id,
                "account_id": window.account_id,
                "path": str(path),
                "records": 4,
                "pages": 1,
                "kind": "records",
                "query_start": "2026-11-01",
                "query_end": "2026-11-14",
            }
        )
    write_jsonl(manifest, files)
    summary = load_transactions_shard("c", 1, 3, start, end, "test_warehouse", destination=dest)
    assert summary["windows"] == 4 and summary["inserted"] == 16 and summary["db_transactions"] == 1
    # Another shard that landed nothing has no manifest: nothing to load, and no error.
    assert load_transactions_shard("c", 2, 3, start, end, "test_warehouse", destination=dest)["windows"] == 0
