"""The real back-end services the e2e, the SQL-store tests and the benchmarks start (e2e/services.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from e2e.services import _port_open, _redis_ping, start_moto, start_postgres, start_redis

pytestmark = pytest.mark.slow


def _listens_beyond_loopback(port: int) -> bool:
    """True when something accepts on ``port`` at an address of this host other than 127.0.0.1."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except socket.gaierror:
        addresses = set()
    for address in addresses - {"127.0.0.1"}:
        if address.startswith("127."):
            continue
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((address, port)) == 0:
                return True
    return False


def test_postgres_runs_unprivileged_on_loopback_and_stops(tmp_path: Path) -> None:
    pg = start_postgres(tmp_path / "pg")
    try:
        url = pg.create_database("warehouse")
        assert url == f"postgresql://airflow@127.0.0.1:{pg.port}/warehouse"
        assert pg.psql("select inet_server_addr()", "warehouse") == "127.0.0.1"
        assert pg.psql("select 6 * 7", "warehouse") == "42"
        if os.geteuid() == 0:  # PostgreSQL refuses root: it must run as an unprivileged user
            owner = Path(f"/proc/{pg.proc.pid}").stat().st_uid
            assert owner != 0
        assert not _listens_beyond_loopback(pg.port)
    finally:
        pg.stop()
    assert pg.proc.poll() is not None
    assert not _port_open(pg.port)


def test_redis_answers_ping_and_stops(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
        assert _redis_ping(redis.port)
        assert not _listens_beyond_loopback(redis.port)
    finally:
        redis.stop()
    assert not _port_open(redis.port)


def test_moto_is_an_s3_endpoint(tmp_path: Path) -> None:
    import boto3

    moto = start_moto(tmp_path / "moto")
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="landing")
        s3.put_object(Bucket="landing", Key="a/b.jsonl", Body=b'{"x": 1}\n')
        assert s3.get_object(Bucket="landing", Key="a/b.jsonl")["Body"].read() == b'{"x": 1}\n'
        assert not _listens_beyond_loopback(moto.port)
    finally:
        moto.stop()
    assert not _port_open(moto.port)
