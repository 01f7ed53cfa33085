"""Landing: safe deterministic paths, atomic writes, flat memory (no sandbox needed).

The formats themselves (gzip JSON Lines, Parquet, the one reader) are in test_landing_formats.py.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_openbanking.landing import (
    MAX_SEGMENT_LENGTH,
    AtomicWriter,
    JsonLinesWriter,
    Layout,
    default_destination,
    interval_segment,
    lineage_dataset,
    read_jsonl,
    safe_segment,
    to_storage_path,
    write_jsonl,
)

UTC = dt.timezone.utc
START, END = dt.datetime(2026, 11, 19, tzinfo=UTC), dt.datetime(2026, 11, 20, tzinfo=UTC)
HOSTILE = [
    "a/b",
    "..",
    ".",
    "../../etc/passwd",
    "a?b#c",
    "a%2Fb",
    "100%",
    ".hidden",
    "x" * 400,
    "é/" * 90,
    "a b",
]


def test_safe_segment_is_one_safe_segment_and_one_to_one():
    encoded = [safe_segment(v) for v in [*HOSTILE, "acc-1", "A.b_c~d-e"]]
    assert len(set(encoded)) == len(encoded)  # distinct ids never share a path
    for seg in encoded:
        assert "/" not in seg and "?" not in seg and "#" not in seg and " " not in seg
        assert not seg.startswith(".")
        assert len(seg) <= MAX_SEGMENT_LENGTH
    assert safe_segment("acc-1") == "acc-1"  # ordinary ids stay readable
    assert safe_segment("a/b") != safe_segment("a%2Fb")
    assert safe_segment("x" * 400) != safe_segment("x" * 401)
    with pytest.raises(ValueError):
        safe_segment("")


def test_layout_is_deterministic_and_never_escapes_the_destination(tmp_path):
    dest = to_storage_path(str(tmp_path / "dest"))
    layout = Layout(dest, "transactions", "ob/../conn", START, END)
    again = Layout(to_storage_path(str(tmp_path / "dest")), "transactions", "ob/../conn", START, END)
    paths = set()
    for account_id in HOSTILE:
        path = layout.records_file(account_id)
        assert path == again.records_file(account_id)
        real = os.path.normpath(str(path.path))
        assert real.startswith(str(tmp_path / "dest" / "transactions") + os.sep)
        assert real.count(os.sep) == str(tmp_path / "dest").count(os.sep) + 4
        paths.add(real)
        write_jsonl(path, [{"accountId": account_id}])
        assert read_jsonl(path) == [{"accountId": account_id}]
    assert len(paths) == len(HOSTILE)
    # gzip JSON Lines unless told otherwise
    assert str(layout.records_file()).endswith(
        "/transactions/conn_id=ob%2F..%2Fconn/interval=20261119T000000Z_20261120T000000Z/transactions.jsonl.gz"
    )
    plain = Layout(dest, "transactions", "ob/../conn", START, END, file_format="jsonl")
    assert str(plain.records_file("a")).endswith(
        "/interval=20261119T000000Z_20261120T000000Z/account_id=a.jsonl"
    )
    blob = layout.blob_file("statement_files", "acc/1", "st?1", ".pdf")
    assert str(blob).endswith(
        "/statement_files/conn_id=ob%2F..%2Fconn/interval=20261119T000000Z_20261120T000000Z/account_id=acc%2F1/st%3F1.pdf"
    )
    # a naive datetime is UTC; other zones are converted
    cet = dt.timezone(dt.timedelta(hours=1))
    assert interval_segment(dt.datetime(2026, 11, 19), dt.datetime(2026, 11, 20, 1, tzinfo=cet)) == (
        "20261119T000000Z_20261120T000000Z"
    )


def test_rerun_replaces_and_failures_leave_the_old_file(tmp_path):
    path = to_storage_path(str(tmp_path)) / "d" / "f.jsonl"
    assert write_jsonl(path, ({"n": i, "text": "é"} for i in range(3))) == 3
    assert write_jsonl(path, [{"n": 9}]) == 1
    assert read_jsonl(path) == [{"n": 9}]  # replaced, not appended

    def failing():
        yield {"n": 10}
        raise RuntimeError("connection dropped")

    with pytest.raises(RuntimeError):
        write_jsonl(path, failing())
    assert read_jsonl(path) == [{"n": 9}]
    assert sorted(os.listdir(tmp_path / "d")) == ["f.jsonl"]  # no temporary leftovers

    # A fetch failing before the first record leaves no trace at all.
    untouched = to_storage_path(str(tmp_path)) / "never" / "f.jsonl"
    with pytest.raises(RuntimeError), JsonLinesWriter(untouched):
        raise RuntimeError("consent revoked")
    assert not (tmp_path / "never").exists()

    # An empty result lands an empty file (it replaces an older one).
    assert write_jsonl(path, []) == 0
    assert (tmp_path / "d" / "f.jsonl").read_bytes() == b""

    # Binary files go through the same writer.
    pdf = to_storage_path(str(tmp_path)) / "s" / "x.pdf"
    with AtomicWriter(pdf) as writer:
        for chunk in (b"%PDF-1.4\n", b"x" * 300_000, b"%%EOF"):
            writer.write(chunk)
    assert (tmp_path / "s" / "x.pdf").stat().st_size == writer.bytes_written == 9 + 300_000 + 5


def test_a_killed_writer_leaves_nothing_at_the_final_path(tmp_path):
    """SIGKILL mid-write: readers see no file (only a hidden .partial), the next write cleans up."""
    final = tmp_path / "out" / "account_id=acc-1.jsonl"
    script = textwrap.dedent(
        f"""
        import os, signal
        from airflow_provider_openbanking.landing import JsonLinesWriter, to_storage_path
        path = to_storage_path({str(final)!r})
        with JsonLinesWriter(path) as writer:
            for i in range(100_000):
                writer.write_record({{"transactionId": i, "description": "x" * 50}})
                if i == 20_000:  # a few chunks are on disk by now
                    os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    left = os.listdir(final.parent)
    assert final.name not in left
    assert len(left) == 1 and left[0].startswith(".account_id=acc-1.jsonl.") and left[0].endswith(".partial")
    assert os.path.getsize(final.parent / left[0]) > 0

    write_jsonl(to_storage_path(str(final)), [{"transactionId": 1}])
    assert os.listdir(final.parent) == [final.name]
    assert read_jsonl(str(to_storage_path(str(final)))) == [{"transactionId": 1}]


def test_memory_stays_flat_while_streaming(tmp_path):
    """200k records (a 1M-transaction account scaled down) cost what one chunk costs."""

    def records(n):
        for i in range(n):
            yield {
                "accountId": "acc-1",
                "transactionId": f"tx-{i:08d}",
                "postedTimestamp": "2026-11-19T10:00:00.000Z",
                "description": "GROCERY STORE #1234 MONTREAL QC",
                "amount": i / 100,
                "status": "POSTED",
            }

    path = to_storage_path(str(tmp_path)) / "big.jsonl"
    tracemalloc.start()
    try:
        count = write_jsonl(path, records(200_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    size = (tmp_path / "big.jsonl").stat().st_size
    assert size > 20_000_000
    assert peak < 4_000_000, f"peak {peak} bytes for a {size} byte file"


def test_destinations_and_lineage_names(tmp_path, monkeypatch):
    assert str(to_storage_path(str(tmp_path))) == f"file://{tmp_path}"
    assert str(to_storage_path(f"file://{tmp_path}/x")) == f"file://{tmp_path}/x"
    assert to_storage_path(ObjectStoragePath(f"file://{tmp_path}")).protocol == "file"
    assert to_storage_path(Path(tmp_path)).protocol == "file"
    from airflow.configuration import AIRFLOW_HOME

    assert str(default_destination()) == f"file://{AIRFLOW_HOME}/openbanking"
    assert str(to_storage_path(None)) == f"file://{AIRFLOW_HOME}/openbanking"
    monkeypatch.setenv("AIRFLOW__OPENBANKING__LANDING_DESTINATION", str(tmp_path / "configured"))
    assert str(to_storage_path(None)) == f"file://{tmp_path}/configured"

    assert lineage_dataset(f"file://{tmp_path}/a.jsonl") == ("file", f"{tmp_path}/a.jsonl")
    assert lineage_dataset("s3://bucket/ob/a.jsonl") == ("s3://bucket", "ob/a.jsonl")
