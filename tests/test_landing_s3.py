"""Landing on S3: every format written to and read back from a real S3 endpoint (moto's server on a
free loopback port, ``e2e/services.start_moto``) through the landing functions, inside real
Airflow tasks (``dag.test()``), with an ``aws`` connection made by ``airflow connections add``: the
Task SDK resolves it from the metadata DB only inside a task, as for a user's operator.

Checked against the bucket itself (boto3, outside Airflow): contents, formats, and that a failed
write leaves no object behind -- neither the final one nor its ``.partial`` sibling nor an
unfinished multipart upload -- and leaves an earlier file untouched.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_openbanking import landing
from airflow_provider_openbanking.landing import (
    FILE_FORMATS,
    Layout,
    check_destination_writable,
    iter_records,
    open_records_writer,
    read_records,
    to_storage_path,
    write_records,
)
from airflow_provider_openbanking.sandbox.data import Bank

pytestmark = pytest.mark.slow

UTC = dt.timezone.utc
START, END = dt.datetime(2026, 11, 19, tzinfo=UTC), dt.datetime(2026, 11, 20, tzinfo=UTC)
BUCKET = "landing"
KEY = ("testing", "testing")
MAGIC = {"jsonl": b"{", "jsonl.gz": b"\x1f\x8b", "parquet": b"PAR1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's S3 server, a bucket, and an ``aws`` connection to it in the metadata DB."""
    import boto3

    from e2e.services import start_moto

    conn_id = f"aws_landing_{uuid.uuid4().hex[:8]}"
    with start_moto(tmp_path_factory.mktemp("moto")) as moto:
        client = boto3.client(
            "s3",
            endpoint_url=moto.url,
            aws_access_key_id=KEY[0],
            aws_secret_access_key=KEY[1],
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        added = subprocess.run(
            [
                sys.executable, "-m", "airflow", "connections", "add", conn_id,
                "--conn-type", "aws", "--conn-login", KEY[0], "--conn-password", KEY[1],
                "--conn-extra", json.dumps({"endpoint_url": moto.url, "region_name": "us-east-1"}),
            ],
            env=os.environ.copy(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ
        yield {"client": client, "url": f"s3://{conn_id}@{BUCKET}", "conn_id": conn_id}


def keys(client: Any, prefix: str) -> list[str]:
    """Every object under the folder ``prefix``, straight from the bucket (no s3fs listing cache)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/")
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def unfinished_uploads(client: Any, prefix: str) -> list[str]:
    uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/")
    return [u["Key"] for u in uploads.get("Uploads", [])]


def transactions(n: int) -> Iterator[dict[str, Any]]:
    """``n`` transactions of every account type the sandbox has (its generator, pending ones too),
    with unique ids."""
    bank = Bank(customers=1, accounts_per_customer=6, transactions_per_account=300)
    base = []
    for account in bank.customers[0].accounts:
        series = bank.series(account, 300)
        base += [series.record(i, pending=i % 40 == 0) for i in range(300)]
    for i in range(n):
        record = dict(base[i % len(base)])
        record["transactionId"] = f"{record['transactionId']}-{i // len(base)}"
        yield record


def records_file(url: str, fmt: str, root: str) -> Any:
    layout = Layout(to_storage_path(f"{url}/{root}"), "transactions", "ob", START, END, file_format=fmt)
    return layout.records_file("acc-1")


def key_of(path: Any) -> str:
    return str(path).split(f"{BUCKET}/", 1)[1]


def digest(records: list[dict[str, Any]], fields: tuple[str, ...] | None = None) -> str:
    rows = [{k: r.get(k) for k in fields} if fields else r for r in records]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


#: What Parquet's typed columns keep exactly as JSON gives them (amounts compared as numbers).
TYPED = ("transactionId", "accountId", "status", "postedTimestamp", "transactionTimestamp")
ROUND_TRIP = 3_000
#: Plain JSON Lines goes past s3fs's 5 MiB block: a multipart upload is under way when it fails.
FAIL_AFTER = {"jsonl": 16_000, "jsonl.gz": 12_000, "parquet": 60_000}
OLD = 10
#: Whether the partial object was in the bucket when each failing writer discarded it.
PARTIALS_SEEN: dict[str, list[bool]] = {}


def land_round_trip(url: str, fmt: str) -> dict[str, Any]:
    path = records_file(url, fmt, f"roundtrip-{fmt}")
    written = write_records(path, transactions(ROUND_TRIP))
    back = read_records(path)
    return {
        "path": str(path),
        "written": written,
        "streamed": sum(1 for _ in iter_records(f"{url}/{key_of(path)}")),  # the URL a manifest carries
        "digest": digest(back, TYPED if fmt == "parquet" else None),
        "amounts": [r["amount"] for r in back],
    }


def land_and_fail(url: str, fmt: str, client: Any) -> dict[str, Any]:
    path = records_file(url, fmt, f"failed-{fmt}")
    write_records(path, transactions(OLD))
    seen = PARTIALS_SEEN.setdefault(fmt, [])
    real_discard = landing.AtomicWriter._discard

    def discard(self: landing.AtomicWriter) -> None:
        # the partial object is in the bucket when the writer gives up: a real one gets removed
        seen.append(key_of(self._tmp_path) in keys(client, f"failed-{fmt}"))
        real_discard(self)

    landing.AtomicWriter._discard = discard  # type: ignore[method-assign]
    sent = {"bytes": 0}
    try:
        with open_records_writer(path) as writer:

            def failing() -> Iterator[dict[str, Any]]:
                yield from transactions(FAIL_AFTER[fmt])
                sent["bytes"] = writer.bytes_written
                raise ConnectionError("the bank hung up mid-pagination")

            writer.write_records(failing())
    except ConnectionError as exc:
        error = str(exc)
    else:
        error = ""
    finally:
        landing.AtomicWriter._discard = real_discard  # type: ignore[method-assign]
    return {"path": str(path), "error": error, "bytes_before_failure": sent["bytes"]}


def land_twice_in_two_formats(url: str) -> dict[str, Any]:
    first, second = records_file(url, "jsonl.gz", "rerun"), records_file(url, "parquet", "rerun")
    write_records(first, transactions(50))
    write_records(second, transactions(40))
    return {"first": str(first), "second": str(second), "records": len(read_records(second))}


@pytest.fixture(scope="module")
def landed(s3: dict[str, Any]) -> dict[str, Any]:
    """One real DAG run whose tasks land on S3 through the aws connection of the metadata DB."""
    from airflow.sdk import DAG, task

    from tests.operators.dagrun_helpers import run_dag

    url, client = s3["url"], s3["client"]
    with DAG(f"ob_landing_s3_{uuid.uuid4().hex[:6]}", schedule=None, start_date=START, catchup=False) as dag:
        for fmt in FILE_FORMATS:
            name = fmt.replace(".", "_")
            task(task_id=f"round_trip_{name}")(land_round_trip)(url, fmt)
            task(task_id=f"fail_{name}")(land_and_fail)(url, fmt, client)
        task(task_id="rerun")(land_twice_in_two_formats)(url)
        task(task_id="probe")(lambda: str(check_destination_writable(f"{url}/probed")))()
    result = run_dag(dag, START)
    assert set(result.states.values()) == {"success"}, result.states
    return result.xcoms


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_each_format_round_trips_through_s3(s3: dict[str, Any], landed: dict[str, Any], fmt: str) -> None:
    out = landed[f"round_trip_{fmt.replace('.', '_')}"]
    expected = list(transactions(ROUND_TRIP))
    assert out["written"] == out["streamed"] == ROUND_TRIP
    assert out["digest"] == digest(expected, TYPED if fmt == "parquet" else None)
    assert out["amounts"] == pytest.approx([r["amount"] for r in expected])

    client, key = s3["client"], key_of(out["path"])
    assert keys(client, f"roundtrip-{fmt}") == [key]
    assert key.endswith({"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "parquet": ".parquet"}[fmt])
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body.startswith(MAGIC[fmt])
    if fmt == "jsonl.gz":  # a plain gzip stream any tool reads
        assert [json.loads(line) for line in gzip.decompress(body).splitlines()] == expected
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(body))
        assert table.num_rows == ROUND_TRIP
        assert table.column("transactionId").to_pylist() == [r["transactionId"] for r in expected]


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_a_failed_write_leaves_nothing_on_s3_and_the_old_file_intact(
    s3: dict[str, Any], landed: dict[str, Any], fmt: str
) -> None:
    out = landed[f"fail_{fmt.replace('.', '_')}"]
    client, root, key = s3["client"], f"failed-{fmt}", key_of(out["path"])
    assert out["error"] == "the bank hung up mid-pagination"
    assert out["bytes_before_failure"] > landing._FLUSH_BYTES  # the object was open on S3
    assert PARTIALS_SEEN[fmt] == [True]
    assert keys(client, root) == [key]  # no .partial, nothing new
    assert unfinished_uploads(client, root) == []
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    old = list(transactions(OLD))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(io.BytesIO(body)).column("transactionId").to_pylist() == [
            r["transactionId"] for r in old
        ]
    else:
        text = gzip.decompress(body) if fmt == "jsonl.gz" else body
        assert [json.loads(line) for line in text.splitlines()] == old


def test_a_rerun_in_another_format_replaces_the_window_file_on_s3(
    s3: dict[str, Any], landed: dict[str, Any]
) -> None:
    out = landed["rerun"]
    assert out["records"] == 40
    assert keys(s3["client"], "rerun") == [key_of(out["second"])]


def test_the_destination_probe_on_s3_leaves_nothing(s3: dict[str, Any], landed: dict[str, Any]) -> None:
    assert landed["probe"].endswith(f"{BUCKET}/probed")
    assert keys(s3["client"], "probed") == []
