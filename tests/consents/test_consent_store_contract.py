"""The consent store contract, run against every backend.

Backends: in memory; Airflow Variables (the metadata DB of the test session's throw-away
``AIRFLOW_HOME``, the path the CLI takes); SQL through a real common-sql connection on SQLite and
on PostgreSQL (a throw-away cluster of the machine's own binaries, ``e2e/services.py``; skipped with
the reason when PostgreSQL is not installed).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_provider_openbanking.consents import (
    ConsentRecord,
    ConsentStore,
    ConsentStoreError,
    InMemoryConsentStore,
    VariableConsentStore,
)
from airflow_provider_openbanking.consents.sql import SqlConsentStore, engine_for

FERNET_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from e2e.services import ServiceError, start_postgres

    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail("psycopg2 is not installed: `make pytest` installs it with the [dev] extra")
    try:
        service = start_postgres(tmp_path_factory.mktemp("pg"))
    except ServiceError as exc:
        pytest.fail(f"PostgreSQL did not start ({exc}); `make pytest` installs it with apt")
    with service:
        yield service.create_database("consents")


def _sql_conn(monkeypatch: pytest.MonkeyPatch, uri: str) -> str:
    conn_id = f"consent_db_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
    return conn_id


@pytest.fixture(params=["memory", "variable", "sql-sqlite", "sql-postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConsentStore]:
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", FERNET_KEY)
    kind = request.param
    if kind == "memory":
        yield InMemoryConsentStore()
    elif kind == "variable":
        yield VariableConsentStore(settle_seconds=0.01)
    elif kind == "sql-sqlite":
        yield SqlConsentStore(_sql_conn(monkeypatch, f"sqlite:///{tmp_path / 'consents.db'}"))
    else:
        url = request.getfixturevalue("postgres_url")
        yield SqlConsentStore(_sql_conn(monkeypatch, url.replace("postgresql://", "postgres://")))


def conn_id() -> str:
    return f"ob_{uuid.uuid4().hex[:10]}"


def rec(conn: str, consent: str, token: str = "rt-0123456789abcdef", **kw: Any) -> ConsentRecord:
    return ConsentRecord(conn, consent, refresh_token=token, **kw)


def test_round_trip_keeps_every_field(store: ConsentStore) -> None:
    c = conn_id()
    assert store.load(c, "alice") is None and store.consent_ids(c) == []
    record = rec(
        c,
        "alice",
        origin="abc",
        scopes="ACCOUNT_BASIC TRANSACTIONS",
        provider_id="1000",
        last_refresh_at="2026-11-01T00:00:00+00:00",
        last_success_at="2026-11-02T00:00:00+00:00",
        last_error="602",
        access_token="at-0123456789abcdef",
        access_token_expires_at=time.time() + 300,
        access_token_lifetime=300.0,
    )
    written = store.save(record)
    assert written.version == 1
    loaded = store.load(c, "alice")
    assert loaded is not None and loaded.to_dict() == written.to_dict()
    assert store.save(loaded.replace(refresh_token="rt-rotated-000000000")).version == 2
    again = store.load(c, "alice")
    assert again is not None and again.refresh_token == "rt-rotated-000000000" and again.version == 2


def test_keys_are_connection_and_consent(store: ConsentStore) -> None:
    a, b = conn_id(), conn_id()
    store.save(rec(a, "cust-1", "rt-a-cust1-0000000"))
    store.save(rec(a, "cust-2", "rt-a-cust2-0000000"))
    store.save(rec(b, "cust-1", "rt-b-cust1-0000000"))
    store.save(rec(a, "default", "rt-a-default-00000"))
    assert store.consent_ids(a) == ["cust-1", "cust-2", "default"] and store.consent_ids(b) == ["cust-1"]
    many = store.load_many(a, ["cust-2", "cust-1", "missing"])
    assert sorted(many) == ["cust-1", "cust-2"]
    assert {k: r.refresh_token for k, r in many.items()} == {
        "cust-1": "rt-a-cust1-0000000",
        "cust-2": "rt-a-cust2-0000000",
    }
    assert store.load(b, "cust-1").refresh_token == "rt-b-cust1-0000000"  # type: ignore[union-attr]
    store.delete(a, "cust-1")
    assert store.load(a, "cust-1") is None and store.consent_ids(a) == ["cust-2", "default"]
    store.delete(a, "never-there")  # no error


def test_compare_and_swap(store: ConsentStore) -> None:
    c = conn_id()
    first = rec(c, "k")
    assert store.compare_and_swap(first, 0) and first.version == 1
    assert not store.compare_and_swap(rec(c, "k", "rt-other-insert-000"), 0)  # exists already
    stale = store.load(c, "k")
    assert stale is not None
    assert store.compare_and_swap(stale.replace(refresh_token="rt-winner-00000000"), stale.version)
    # a writer that read before the winner wrote must not overwrite it
    assert not store.compare_and_swap(stale.replace(refresh_token="rt-loser-000000000"), stale.version)
    assert store.load(c, "k").refresh_token == "rt-winner-00000000"  # type: ignore[union-attr]


def test_save_many_upserts(store: ConsentStore) -> None:
    c = conn_id()
    store.save(rec(c, "old", "rt-old-000000000000", created_at="2026-01-01T00:00:00+00:00"))
    n = store.save_many(
        [rec(c, f"cust-{i:03}", f"rt-{i:03}-00000000000") for i in range(30)]
        + [rec(c, "old", "rt-new-000000000000")]
    )
    assert n == 31 and len(store.consent_ids(c)) == 31
    old = store.load(c, "old")
    assert old is not None and old.refresh_token == "rt-new-000000000000" and old.version == 2


def test_lease_has_one_holder_and_expires(store: ConsentStore) -> None:
    c = conn_id()
    store.save(rec(c, "k"))
    held_a, _ = store.acquire_lease(c, "k", "owner-a", 0.5)
    held_b, seen = store.acquire_lease(c, "k", "owner-b", 0.5)
    assert held_a and not held_b and seen is not None and seen.lease_owner == "owner-a"
    time.sleep(0.6)
    held_b, _ = store.acquire_lease(c, "k", "owner-b", 5)
    assert held_b
    store.release_lease(c, "k", "owner-a")  # not the holder: no effect
    assert store.load(c, "k").lease_owner == "owner-b"  # type: ignore[union-attr]
    store.release_lease(c, "k", "owner-b")
    assert store.load(c, "k").lease_owner is None  # type: ignore[union-attr]
    # no record: only a template (the default consent known from the connection) can be leased
    assert store.acquire_lease(c, "absent", "owner-a", 5) == (False, None)
    held, record = store.acquire_lease(c, "default", "owner-a", 5, template=rec(c, "default"))
    assert held and record is not None and store.load(c, "default") is not None


# Variables have no conditional write: their write-then-verify is tested on its own below.
@pytest.mark.parametrize("store", ["memory", "sql-sqlite", "sql-postgres"], indirect=True)
def test_update_is_safe_under_concurrent_writers(store: ConsentStore) -> None:
    threads = 8
    c = conn_id()
    store.save(rec(c, "k", last_error="0"))

    def bump() -> None:
        for _ in range(10):
            store.update(c, "k", lambda r: r.replace(last_error=str(int(r.last_error) + 1)) if r else None)

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert store.load(c, "k").last_error == str(threads * 10)  # type: ignore[union-attr]


def test_variable_compare_and_swap_detects_an_overwrite_in_its_settle_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = VariableConsentStore(settle_seconds=0.2)
    c = conn_id()
    store.save(rec(c, "k"))
    current = store.load(c, "k")
    assert current is not None
    other = threading.Timer(
        0.05,
        lambda: VariableConsentStore._set(
            store.key(c, "k"), rec(c, "k", "rt-intruder-0000000").to_json(), "x"
        ),
    )
    other.start()
    assert not store.compare_and_swap(current.replace(refresh_token="rt-mine-0000000000"), current.version)
    other.join()
    assert store.load(c, "k").refresh_token == "rt-intruder-0000000"  # type: ignore[union-attr]


def test_variable_layout_and_the_0x_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models import Variable

    from airflow_provider_openbanking.token_store import TokenRecord, VariableTokenStore

    c = conn_id()
    VariableTokenStore().save(
        c, TokenRecord("rt-written-by-0x-000", origin="fp", last_refresh_at="2026-11-01T00:00:00+00:00")
    )
    store = VariableConsentStore()
    assert store.consent_ids(c) == ["default"]  # no index yet: found by its key
    old = store.load(c, "default")
    assert old is not None and old.refresh_token == "rt-written-by-0x-000" and old.origin == "fp"
    assert old.state == "active" and old.version == 0
    assert store.compare_and_swap(old.replace(last_success_at="2026-11-02T00:00:00+00:00"), 0)
    store.save(rec(c, "cust-1"))
    assert json.loads(Variable.get(f"openbanking_consents__{c}")) == {"ids": ["cust-1", "default"]}
    assert Variable.get(f"openbanking_token__{c}@cust-1") is not None
    # the 0.x reader still reads what the consent store writes
    assert VariableTokenStore().load(c).refresh_token == "rt-written-by-0x-000"  # type: ignore[union-attr]


def test_sql_tokens_are_encrypted_at_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import event, text

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", FERNET_KEY)
    db_conn = _sql_conn(monkeypatch, f"sqlite:///{tmp_path / 'enc.db'}")
    store = SqlConsentStore(db_conn)
    c = conn_id()
    store.save_many(
        [
            rec(c, f"k{i}", f"rt-secret-{i:04}-xyzxyz", access_token=f"at-secret-{i:04}-xyzxyz")
            for i in range(50)
        ]
    )
    engine = engine_for(db_conn)
    with engine.connect() as db:
        dump = "\n".join(str(tuple(row)) for row in db.execute(text("SELECT * FROM openbanking_consents")))
    assert "rt-secret-" not in dump and "at-secret-" not in dump and "gAAAA" in dump  # Fernet tokens
    assert store.encrypted

    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        batch = store.load_many(c, [f"k{i}" for i in range(50)])
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(batch) == 50 and len(statements) == 1, statements  # a batch read is one query
    assert batch["k7"].refresh_token == "rt-secret-0007-xyzxyz"

    # another key cannot read them, and says why
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    with pytest.raises(ConsentStoreError, match="Fernet key changed"):
        SqlConsentStore(db_conn).load(c, "k1")
    # a key connection wins over [core] fernet_key; rotation: new key first, old one after
    key_conn = _sql_conn(
        monkeypatch,
        json.dumps({"conn_type": "generic", "password": f"{Fernet.generate_key().decode()},{FERNET_KEY}"}),
    )
    assert (
        SqlConsentStore(db_conn, fernet_conn_id=key_conn).load(c, "k1").refresh_token
        == "rt-secret-0001-xyzxyz"
    )  # type: ignore[union-attr]


def test_sql_store_refuses_to_store_plain_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    with pytest.raises(ConsentStoreError, match="needs a Fernet key"):
        SqlConsentStore(_sql_conn(monkeypatch, f"sqlite:///{tmp_path / 'x.db'}"))
