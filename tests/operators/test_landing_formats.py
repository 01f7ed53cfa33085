"""Landing formats (issue 18): gzip JSON Lines by default, plain JSON Lines, typed Parquet, and the
one reader that reads them all.

Records are the sandbox's own (its data generator, no server) where the shape matters; the
operator tests at the end run real DAGs against the sandbox over HTTP.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import sys
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_openbanking.get_provider_info import get_provider_info
from airflow_provider_openbanking.landing import (
    DEFAULT_FILE_FORMAT,
    FILE_FORMATS,
    GzipJsonLinesWriter,
    Layout,
    ParquetRecordsWriter,
    RecordRefusedError,
    file_format_of,
    iter_records,
    open_records_writer,
    read_records,
    require_pyarrow,
    resolve_file_format,
    to_storage_path,
    write_records,
)
from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountsOperator,
    OpenBankingTransactionsOperator,
)
from airflow_provider_openbanking.sandbox.data import Bank
from airflow_provider_openbanking.schemas import EXTRA_COLUMN, arrow_schema
from tests.operators.dagrun_helpers import UTC, run_dag
from tests.operators.test_openbanking_operators import CUSTOMER, LOGICAL, daily_dag

START, END = dt.datetime(2026, 11, 19, tzinfo=UTC), dt.datetime(2026, 11, 20, tzinfo=UTC)
SUFFIX = {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "parquet": ".parquet"}


def bank_transactions(per_account: int = 300) -> list[dict]:
    """Transactions of every account type the sandbox has (deposit, credit card, loan, investment),
    pending ones included, exactly as the sandbox serves them (unwrapped)."""
    bank = Bank(customers=1, accounts_per_customer=6, transactions_per_account=per_account)
    records = []
    for account in bank.customers[0].accounts:
        series = bank.series(account, per_account)
        records += [series.record(i, pending=i % 40 == 0) for i in range(per_account)]
    return records


def bank_accounts() -> list[dict]:
    bank = Bank(customers=1, accounts_per_customer=6)
    return [a.full("2026-11-20T00:00:00.000Z", holdings=True) for a in bank.customers[0].accounts]


def layout_file(tmp_path: Path, dataset: str, fmt: str, account_id: str | None = "acc-1"):
    layout = Layout(to_storage_path(str(tmp_path)), dataset, "ob", START, END, file_format=fmt)
    return layout.records_file(account_id)


def only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- formats, names, configuration ----------------------------------------------------------------


def test_file_format_resolution_and_config(monkeypatch):
    monkeypatch.delenv("AIRFLOW__OPENBANKING__FILE_FORMAT", raising=False)
    assert resolve_file_format(None) == DEFAULT_FILE_FORMAT == "jsonl.gz"
    assert resolve_file_format("") == "jsonl.gz"
    assert [resolve_file_format(f) for f in (" Parquet", ".jsonl", "JSONL.GZ")] == [
        "parquet",
        "jsonl",
        "jsonl.gz",
    ]
    with pytest.raises(
        ValueError,
        match=r"file_format='csv' is not a landing file format: use one of jsonl, jsonl.gz, parquet",
    ):
        resolve_file_format("csv")
    monkeypatch.setenv("AIRFLOW__OPENBANKING__FILE_FORMAT", "parquet")
    assert resolve_file_format(None) == "parquet"
    assert resolve_file_format("jsonl") == "jsonl"  # the operator's argument wins
    monkeypatch.setenv("AIRFLOW__OPENBANKING__FILE_FORMAT", "xml")
    with pytest.raises(ValueError, match=r"\[openbanking\] file_format='xml'"):
        resolve_file_format(None)

    assert file_format_of("a/account_id=x.jsonl.gz") == "jsonl.gz"
    assert file_format_of("s3://b/k/accounts.parquet") == "parquet"
    assert file_format_of("x.jsonl") == "jsonl" and file_format_of("x.pdf") is None
    assert file_format_of(".jsonl") is None


def test_config_section_is_declared_and_read_by_airflow(monkeypatch):
    options = get_provider_info()["config"]["openbanking"]["options"]
    assert set(options) == {"landing_destination", "file_format"}
    assert options["file_format"]["default"] == "jsonl.gz"
    assert options["landing_destination"]["default"] is None
    for option in options.values():
        assert option["description"] and option["type"] == "string" and option["version_added"]
    monkeypatch.delenv("AIRFLOW__OPENBANKING__FILE_FORMAT", raising=False)
    from airflow.configuration import conf

    # the installed provider's declared default reaches Airflow's configuration
    assert conf.get("openbanking", "file_format") == "jsonl.gz"
    assert conf.get("openbanking", "landing_destination", fallback=None) is None


def test_file_format_is_templated_and_checked_when_the_dag_is_parsed():
    for cls in (OpenBankingTransactionsOperator, OpenBankingAccountsOperator):
        assert "file_format" in cls.template_fields
    with pytest.raises(ValueError, match="is not a landing file format"):
        OpenBankingTransactionsOperator(task_id="t", file_format="csv")
    op = OpenBankingTransactionsOperator(task_id="t", file_format="{{ params.fmt }}")
    assert op.file_format == "{{ params.fmt }}"  # checked at run time, once rendered


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_every_format_gives_back_what_the_bank_sent(tmp_path, fmt):
    records = bank_transactions()
    odd = [
        {"accountId": "acc-1", "transactionId": "t-null", "amount": 1, "memo": None, "status": "POSTED"},
        {
            "accountId": "acc-1",
            "transactionId": "t-extra",
            "postedTimestamp": "2026-11-05T10:00:00.123456Z",
            "transactionTimestamp": "2026-11-05T10:00:00.250Z",
            "amount": -12.5,
            "lineItem": [{"description": "tip", "amount": 2.0}],  # no column: kept in _extra
            "fiAttributes": [{"name": "x", "value": "y"}],
            "brandNew": {"nested": [1, "two", None]},
        },
    ]
    records += odd
    path = layout_file(tmp_path, "transactions", fmt)
    assert str(path).endswith(SUFFIX[fmt])
    assert write_records(path, iter(records), dataset="transactions") == len(records)
    back = read_records(path)
    assert back == records  # every field, every type, explicit nulls and unknown fields included
    assert [next(iter_records(str(path)))] == records[:1]  # streaming reader, URL string too
    accounts = bank_accounts()
    path = layout_file(tmp_path, "accounts", fmt, None)
    write_records(path, accounts)  # dataset taken from the Layout path
    assert read_records(path) == accounts


def test_gzip_is_plain_gzip_json_lines_and_much_smaller(tmp_path):
    records = bank_transactions()
    plain, zipped = (
        layout_file(tmp_path, "transactions", "jsonl"),
        layout_file(tmp_path / "z", "transactions", "jsonl.gz"),
    )
    write_records(plain, records)
    with open_records_writer(zipped) as writer:
        assert isinstance(writer, GzipJsonLinesWriter)
        writer.write_records(records)
    raw = Path(plain.path).read_bytes()
    packed = Path(zipped.path).read_bytes()
    assert gzip.decompress(packed) == raw  # any gzip reader (zcat, DuckDB, Spark) reads it
    assert [json.loads(line) for line in raw.splitlines()] == records
    assert writer.bytes_written == len(packed) and writer.raw_bytes == len(raw)
    assert len(packed) * 6 < len(raw), (len(packed), len(raw))
    # deterministic bytes: a rerun of the same data writes the same file
    write_records(zipped, records)
    assert Path(zipped.path).read_bytes() == packed


def test_parquet_has_typed_columns_and_an_extra_json_column(tmp_path):
    records = bank_transactions(100)
    records[0] = {**records[0], "postedTimestamp": "2026-11-05T10:00:00-05:00", "surprise": 1}
    path = layout_file(tmp_path, "transactions", "parquet")
    write_records(path, records, dataset="transactions")
    table = pq.read_table(path.path)
    schema = table.schema
    assert schema.field("amount").type == pa.float64()
    assert schema.field("postedTimestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("transactionTimestamp").type == pa.timestamp("us", tz="UTC")
    for name in ("accountId", "transactionId", "status", "debitCreditMemo", "category", EXTRA_COLUMN):
        assert schema.field(name).type == pa.string(), name
    assert schema.field("checkNumber").type == pa.int64()
    assert schema.equals(arrow_schema("transactions"), check_metadata=False)
    first = table.slice(0, 1).to_pylist()[0]
    assert first["postedTimestamp"] == dt.datetime(2026, 11, 5, 15, 0, tzinfo=dt.timezone.utc)  # in UTC
    assert json.loads(first[EXTRA_COLUMN]) == {"surprise": 1}
    assert table.column("amount").to_pylist() == [r["amount"] for r in records]
    # read back: the timestamp in UTC, everything else as sent
    back = read_records(path)
    assert back[0]["postedTimestamp"] == "2026-11-05T15:00:00.000Z"
    assert back[1:] == records[1:]
    # every dataset has its schema: accounts' dates and numbers are typed too
    accounts = layout_file(tmp_path, "accounts", "parquet", None)
    write_records(accounts, bank_accounts())
    a_schema = pq.read_schema(accounts.path)
    assert a_schema.field("balanceAsOf").type == pa.timestamp("us", tz="UTC")
    assert a_schema.field("nextPaymentDate").type == pa.date32()
    assert a_schema.field("loanTerm").type == pa.int64()
    assert a_schema.field("currentBalance").type == pa.float64()


@pytest.mark.parametrize(
    ("field", "value", "value_type"),
    [
        ("amount", "abc", "string"),
        ("amount", True, "boolean"),
        ("checkNumber", 1.5, "number"),
        ("transactionId", {"id": 1}, "object"),
        ("postedTimestamp", "yesterday", "string that is not an ISO 8601 date-time"),
    ],
)
def test_a_record_that_cannot_take_the_schema_is_refused_and_nothing_lands(
    tmp_path, field, value, value_type
):
    records = bank_transactions(500)  # 3,000: the bad one is in the second chunk converted
    path = layout_file(tmp_path, "transactions", "parquet")
    write_records(path, records[:3])  # an earlier run's file
    before = Path(path.path).read_bytes()
    bad = [*records[:1500], {**records[7], field: value}, *records[1500:]]
    with (
        pytest.raises(RecordRefusedError) as caught,
        open_records_writer(path, "transactions", account_id="acc-7") as writer,
    ):
        writer.write_records(bad)
    error = caught.value
    message = str(error)
    assert isinstance(error, AirflowFailException)  # retrying fetches the same data
    assert (error.field, error.account_id, error.value_type) == (field, "acc-7", value_type)
    assert f"field {field!r}" in message and "account 'acc-7'" in message and value_type in message
    assert "record 1501" in message and "nothing of it landed" in message
    if isinstance(value, str):
        assert value not in message  # the type is named, never the value
    assert Path(path.path).read_bytes() == before  # the old file is untouched
    assert only_files(Path(path.path).parent) == [Path(path.path).name]  # no .partial left


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_failures_leave_the_old_file_and_no_partial(tmp_path, fmt):
    path = layout_file(tmp_path, "transactions", fmt)
    write_records(path, [{"transactionId": "old", "amount": 1.0}])

    def failing():
        yield from bank_transactions(2000)  # several chunks on disk already
        raise RuntimeError("connection dropped")

    with pytest.raises(RuntimeError):
        write_records(path, failing(), dataset="transactions")
    assert read_records(path) == [{"transactionId": "old", "amount": 1.0}]
    assert only_files(Path(path.path).parent) == [Path(path.path).name]
    # an empty result lands an empty, readable file in every format
    assert write_records(path, []) == 0
    assert read_records(path) == []


def test_a_rerun_in_another_format_replaces_the_window_file(tmp_path):
    records = bank_transactions(20)
    folder = None
    for fmt in ("jsonl", "jsonl.gz", "parquet", "jsonl.gz"):
        path = layout_file(tmp_path, "transactions", fmt)
        write_records(path, records)
        folder = Path(path.path).parent
        assert only_files(folder) == [f"account_id=acc-1{SUFFIX[fmt]}"]  # one window, one file
        assert read_records(path) == records
    # another account's file and other names are never touched
    other = layout_file(tmp_path, "transactions", "jsonl", "acc-2")
    write_records(other, records)
    write_records(layout_file(tmp_path, "transactions", "parquet"), records)
    assert only_files(folder) == ["account_id=acc-1.parquet", "account_id=acc-2.jsonl"]


def test_parquet_memory_stays_flat_while_streaming(tmp_path):
    """60k transactions (7 row groups; tracemalloc makes each record slow): Python memory stays at a
    chunk's, Arrow's at about one row group's (all of them held would be ~60 MB)."""

    def records(n):
        for i in range(n):
            yield {
                "accountId": "acc-1",
                "transactionId": f"tx-{i:08d}",
                "postedTimestamp": "2026-11-19T10:00:00.000Z",
                "transactionTimestamp": "2026-11-18T10:00:00.000Z",
                "description": f"GROCERY STORE #{i % 5000} MONTREAL QC",
                "amount": i / 100,
                "debitCreditMemo": "DEBIT",
                "status": "POSTED",
            }

    path = layout_file(tmp_path, "transactions", "parquet")
    pool = pa.default_memory_pool()
    arrow_before = pool.bytes_allocated()
    tracemalloc.start()
    try:
        with ParquetRecordsWriter(path, "transactions") as writer:
            arrow_peak = 0
            for record in records(60_000):
                writer.write_record(record)
                if writer.records % 4096 == 0:
                    arrow_peak = max(arrow_peak, pool.bytes_allocated() - arrow_before)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = os.path.getsize(path.path)
    assert pq.ParquetFile(path.path).metadata.num_row_groups >= 6  # written as it went
    assert python_peak < 8_000_000, python_peak
    assert arrow_peak < 24_000_000, arrow_peak
    assert size < 60_000 * 40, size


def test_missing_pyarrow_is_a_clear_error(monkeypatch, tmp_path):
    """pyarrow cannot be uninstalled for one test: its import is made to fail instead."""
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'airflow-provider-openbanking\[parquet\]'"):
        require_pyarrow()
    with pytest.raises(ImportError, match="needs pyarrow"):
        open_records_writer(layout_file(tmp_path, "transactions", "parquet"))


# -- the operators ---------------------------------------------------------------------------------


def test_operators_land_parquet_and_refuse_one_accounts_bad_window(
    openbanking_conn, sandbox, tmp_path, capfd
):
    """file_format="parquet" lands typed files; an account whose page has an amount of "abc" is
    refused (named, with the field and the value's type), the other accounts land, and the task
    ends at its first try."""
    dest = tmp_path / "landing"
    account_ids = [a["accountId"] for a in sandbox.truth_accounts(CUSTOMER)][:3]
    bad = account_ids[1]
    sandbox.inject(
        {"kind": "corrupt", "set": {"amount": "abc"}, "path": f"/accounts/{bad}/transactions", "count": 99}
    )
    with daily_dag("ob_parquet") as dag:
        OpenBankingAccountsOperator(task_id="accounts", destination=str(dest), file_format="parquet")
        OpenBankingTransactionsOperator(
            task_id="transactions",
            account_ids=account_ids,
            destination=str(dest),
            file_format="{{ 'par' ~ 'quet' }}",  # templated
            retries=2,
            retry_delay=dt.timedelta(seconds=0),
        )
    result = run_dag(dag, LOGICAL)
    out = capfd.readouterr().out
    assert result.states == {"accounts": "success", "transactions": "failed"}
    assert result.tries["transactions"] == 1  # AirflowFailException: no retry
    accounts = result.xcoms["accounts"]
    assert accounts["file_format"] == "parquet" and accounts["paths"][0].endswith("/accounts.parquet")
    assert sorted(a["accountId"] for a in read_records(accounts["paths"][0])) == sorted(
        a["accountId"] for a in sandbox.truth_accounts(CUSTOMER)
    )
    landed = sorted(p.name for p in (dest / "transactions").rglob("*") if p.is_file())
    assert landed == sorted(f"account_id={a}.parquet" for a in account_ids if a != bad)  # no .partial
    for account_id in account_ids:
        if account_id == bad:
            continue
        (path,) = (dest / "transactions").rglob(f"account_id={account_id}.parquet")
        expected = sandbox.truth_transactions(account_id, "2026-11-05", "2026-11-19")
        got = read_records(str(path))
        assert sorted(r["transactionId"] for r in got) == sorted(r["transactionId"] for r in expected)
        assert pq.read_schema(path).field("amount").type == pa.float64()
    assert f"transactions of account {bad!r} refused, nothing of it landed" in out
    assert "field 'amount' is a string where the Parquet schema wants a number" in out
    assert "1 account(s) failed" in out


def test_bad_file_format_fails_the_task_before_any_request(openbanking_conn, sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENBANKING__FILE_FORMAT", "csv")
    with daily_dag("ob_bad_format") as dag:
        OpenBankingAccountsOperator(
            task_id="accounts", destination=str(tmp_path), retries=2, retry_delay=dt.timedelta(seconds=0)
        )
    before = sum(sandbox.counters()["requests"].values())
    result = run_dag(dag, LOGICAL)
    assert result.states == {"accounts": "failed"} and result.tries["accounts"] == 1
    assert sum(sandbox.counters()["requests"].values()) == before
    assert not list(tmp_path.rglob("*.*"))
