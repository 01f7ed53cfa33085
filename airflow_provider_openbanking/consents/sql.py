"""Consents in a SQL table, through any common-sql connection (extra ``consent_store_conn_id``).

One row per (connection id, consent id) in ``openbanking_consents`` (created on first use).
Refresh and access tokens are Fernet-encrypted (:mod:`.crypto`); every other column is plain, so
the table can be queried for reporting. What the backend gives over Variables:

- a batch read is one query (``load_many``, ``consent_ids``), an import one transaction;
- compare-and-swap is atomic: ``UPDATE … WHERE conn_id = ? AND consent_id = ? AND version = ?``
  writes only if nobody wrote since the read, so two workers never both consume one rotated
  refresh token and a refresh lease has exactly one holder.

Tested on SQLite and PostgreSQL; any database SQLAlchemy speaks to through a ``DbApiHook``
(``get_sqlalchemy_engine``) should do.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from airflow_provider_openbanking.consents.crypto import TokenCipher, resolve_fernet
from airflow_provider_openbanking.consents.record import ConsentRecord
from airflow_provider_openbanking.consents.store import ConsentStore, ConsentStoreError

TABLE = "openbanking_consents"

_PLAIN = (
    "state",
    "origin",
    "scopes",
    "provider_id",
    "created_at",
    "updated_at",
    "last_refresh_at",
    "last_success_at",
    "last_error",
    "access_token_expires_at",
    "access_token_lifetime",
    "access_token_scope",
    "lease_owner",
    "lease_until",
)


def make_table(metadata: MetaData, name: str = TABLE) -> Table:
    return Table(
        name,
        metadata,
        Column("conn_id", String(250), primary_key=True),
        Column("consent_id", String(128), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("state", String(32), nullable=False),
        Column("refresh_token_enc", Text),
        Column("access_token_enc", Text),
        Column("origin", String(64)),
        Column("scopes", Text),
        Column("provider_id", String(128)),
        Column("created_at", String(40)),
        Column("updated_at", String(40)),
        Column("last_refresh_at", String(40)),
        Column("last_success_at", String(40)),
        Column("last_error", String(250)),
        Column("access_token_expires_at", Float),
        Column("access_token_lifetime", Float),
        Column("access_token_scope", Text),
        Column("lease_owner", String(64)),
        Column("lease_until", Float),
    )


_ENGINES: dict[tuple[str, str], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(conn_id: str) -> Engine:
    """One SQLAlchemy engine per process and connection, from the connection's ``DbApiHook``."""
    from airflow_provider_openbanking.consents._airflow import get_connection

    conn = get_connection(conn_id)
    key = (conn_id, str(conn.get_uri()))  # a connection that changed gets a new engine
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            with _visible_to_sql_hook(conn_id, conn):
                hook = conn.get_hook()
                if not hasattr(hook, "get_sqlalchemy_engine"):
                    raise ConsentStoreError(
                        f"consent_store_conn_id {conn_id!r} is not a SQL connection (its hook "
                        f"{type(hook).__name__} has no get_sqlalchemy_engine)"
                    )
                engine = _ENGINES[key] = hook.get_sqlalchemy_engine()
        return engine


@contextlib.contextmanager
def _visible_to_sql_hook(conn_id: str, conn: Any) -> Iterator[None]:
    """Let the SQL hook find the connection we already resolved.

    A ``DbApiHook`` looks its connection up again by id through the Task SDK, which outside a task
    sees only ``AIRFLOW_CONN_*``: a store connection made with ``airflow connections add`` (the
    metadata DB) would be "not defined" to the CLI. So, outside a task only and only while the
    engine is built, the resolved connection is offered to that lookup in this process's own
    environment (never written anywhere, removed at once); an ``AIRFLOW_CONN_*`` already set wins.
    """
    from airflow_provider_openbanking.consents.variable import in_task_context

    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    if in_task_context() or name in os.environ:
        yield
        return
    os.environ[name] = conn.as_json() if hasattr(conn, "as_json") else conn.get_uri()
    try:
        yield
    finally:
        os.environ.pop(name, None)


class SqlConsentStore(ConsentStore):
    """Consents in the table ``openbanking_consents`` of the database behind ``sql_conn_id``.

    :param sql_conn_id: a common-sql connection (SQLite, Postgres, …).
    :param fernet_conn_id: connection whose password is the Fernet key (default ``[core] fernet_key``).
    :param engine: an engine to use instead (tests, benchmarks); ``fernet``: a ready key.
    """

    kind = "sql"

    def __init__(
        self,
        sql_conn_id: str | None = None,
        *,
        fernet_conn_id: str | None = None,
        engine: Engine | None = None,
        fernet: Any = None,
        table: str = TABLE,
    ) -> None:
        if sql_conn_id is None and engine is None:
            raise ConsentStoreError("the SQL consent store needs consent_store_conn_id")
        self.sql_conn_id = sql_conn_id
        self._engine = engine
        self._cipher = TokenCipher(fernet if fernet is not None else resolve_fernet(fernet_conn_id))
        self.table = make_table(MetaData(), table)
        self._ready = False
        self._ready_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            assert self.sql_conn_id is not None
            self._engine = engine_for(self.sql_conn_id)
        if not self._ready:
            with self._ready_lock:
                if not self._ready:
                    try:
                        self.table.create(self._engine, checkfirst=True)
                    except (OperationalError, ProgrammingError, IntegrityError):
                        # another process created it between the check and the CREATE
                        self.table.create(self._engine, checkfirst=True)
                    self._ready = True
        return self._engine

    # -- rows <-> records -----------------------------------------------------------------------

    def _row(self, record: ConsentRecord) -> dict[str, Any]:
        row: dict[str, Any] = {name: getattr(record, name) for name in _PLAIN}
        row.update(
            conn_id=record.conn_id,
            consent_id=record.consent_id,
            version=record.version,
            refresh_token_enc=self._cipher.encrypt(record.refresh_token),
            access_token_enc=self._cipher.encrypt(record.access_token),
        )
        return row

    def _record(self, row: Any) -> ConsentRecord:
        data = dict(row._mapping)
        fields = {name: data[name] for name in _PLAIN}
        return ConsentRecord(
            conn_id=data["conn_id"],
            consent_id=data["consent_id"],
            version=int(data["version"]),
            refresh_token=self._cipher.decrypt(data["refresh_token_enc"], "refresh token"),
            access_token=self._cipher.decrypt(data["access_token_enc"], "access token"),
            **fields,
        )

    # -- the contract ----------------------------------------------------------------------------

    def _where(self, conn_id: str, consent_id: str) -> Any:
        t = self.table
        return and_(t.c.conn_id == conn_id, t.c.consent_id == consent_id)

    def load(self, conn_id: str, consent_id: str) -> ConsentRecord | None:
        with self.engine.connect() as db:
            row = db.execute(select(self.table).where(self._where(conn_id, consent_id))).first()
        return self._record(row) if row is not None else None

    def load_many(self, conn_id: str, consent_ids: Iterable[str]) -> dict[str, ConsentRecord]:
        """One query, whatever the number of ids."""
        ids = list(dict.fromkeys(consent_ids))
        if not ids:
            return {}
        t = self.table
        stmt = select(t).where(t.c.conn_id == conn_id, t.c.consent_id.in_(bindparam("ids", expanding=True)))
        with self.engine.connect() as db:
            rows = db.execute(stmt, {"ids": ids}).all()
        return {r.consent_id: r for r in map(self._record, rows)}

    def load_all(self, conn_id: str) -> dict[str, ConsentRecord]:
        """Every record of ``conn_id`` (one query)."""
        with self.engine.connect() as db:
            rows = db.execute(select(self.table).where(self.table.c.conn_id == conn_id)).all()
        return {r.consent_id: r for r in map(self._record, rows)}

    def consent_ids(self, conn_id: str) -> list[str]:
        t = self.table
        with self.engine.connect() as db:
            ids = db.execute(select(t.c.consent_id).where(t.c.conn_id == conn_id)).scalars().all()
        return sorted(ids)

    def save(self, record: ConsentRecord) -> ConsentRecord:
        new = record

        def change(current: ConsentRecord | None) -> ConsentRecord:
            return new

        written = self.update(record.conn_id, record.consent_id, change)
        assert written is not None
        return written

    def save_many(self, records: Iterable[ConsentRecord]) -> int:
        """One transaction: every record is written, or none."""
        items = list(records)
        if not items:
            return 0
        t = self.table
        with self.engine.begin() as db:
            by_conn: dict[str, list[ConsentRecord]] = {}
            for record in items:
                by_conn.setdefault(record.conn_id, []).append(record)
            for conn_id, group in by_conn.items():
                stmt = select(t.c.consent_id, t.c.version).where(
                    t.c.conn_id == conn_id, t.c.consent_id.in_(bindparam("ids", expanding=True))
                )
                versions = dict(db.execute(stmt, {"ids": [r.consent_id for r in group]}).all())
                fresh: list[dict[str, Any]] = []
                existing: list[dict[str, Any]] = []
                for record in group:
                    old = versions.get(record.consent_id)
                    record.version = (old or 0) + 1
                    (existing if old is not None else fresh).append(self._row(record))
                if fresh:
                    db.execute(insert(t), fresh)
                if existing:
                    values: dict[str, Any] = {
                        c: bindparam(f"v_{c}") for c in existing[0] if c not in ("conn_id", "consent_id")
                    }
                    stmt_u = (
                        update(t)
                        .where(t.c.conn_id == bindparam("k_conn"), t.c.consent_id == bindparam("k_consent"))
                        .values(**values)
                    )
                    params = [
                        {
                            "k_conn": r["conn_id"],
                            "k_consent": r["consent_id"],
                            **{f"v_{c}": v for c, v in r.items() if c not in ("conn_id", "consent_id")},
                        }
                        for r in existing
                    ]
                    db.execute(stmt_u, params)
        return len(items)

    def compare_and_swap(self, record: ConsentRecord, expected_version: int) -> bool:
        row = self._row(record.replace(version=expected_version + 1))
        t = self.table
        if expected_version == 0:
            try:
                with self.engine.begin() as db:
                    db.execute(insert(t).values(**row))
            except IntegrityError:
                return False
        else:
            with self.engine.begin() as db:
                values = {k: v for k, v in row.items() if k not in ("conn_id", "consent_id")}
                result = db.execute(
                    update(t)
                    .where(self._where(record.conn_id, record.consent_id), t.c.version == expected_version)
                    .values(**values)
                )
                if result.rowcount != 1:
                    return False
        record.version = expected_version + 1
        return True

    def delete(self, conn_id: str, consent_id: str) -> None:
        from sqlalchemy import delete

        with self.engine.begin() as db:
            db.execute(delete(self.table).where(self._where(conn_id, consent_id)))

    @property
    def encrypted(self) -> bool:
        return True

    def describe(self, conn_id: str, consent_id: str | None = None) -> str:
        where = f"connection {self.sql_conn_id!r}" if self.sql_conn_id else "the given engine"
        return f"table {self.table.name} of {where} (tokens Fernet-encrypted)"

    def close(self) -> None:
        if self.sql_conn_id is None and self._engine is not None:
            self._engine.dispose()


__all__ = ["TABLE", "SqlConsentStore", "engine_for", "make_table"]
