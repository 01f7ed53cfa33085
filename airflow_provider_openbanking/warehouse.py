"""Load landed transactions into a SQL table, window by window, through any common-sql connection.

The table is reached through ``BaseHook.get_connection(sql_conn_id).get_hook()``: a SQLite,
Postgres, MySQL, Snowflake… connection gives the matching :class:`DbApiHook`, so changing the
warehouse means changing the connection, not the DAG.

Semantics: **window replace**. The API filters transactions on their posted date (a pending
transaction, which has none yet, on its transaction date); a landed file holds everything the bank
reported for one account and one window. Loading it replaces, in one database transaction, the
table's rows of that (connection, account) whose *window date* falls in the window, and any row
whose key the file carries. Therefore:

- a pending transaction that later posts under a new id disappears when a window containing its
  date is loaded again (the bank no longer reports it) instead of staying as a duplicate;
- changed amounts (a pending authorization that posts with a tip) are updated;
- loading the same window twice leaves the table exactly as it was (no load timestamps are
  stored, on purpose);
- a window that comes back empty empties that window.

Key: ``(conn_id, consent_id, account_id, transaction_id)``: one connection (API client) holds
many consents, and an account id is only meaningful within its consent. Only portable SQL is used
(``CREATE TABLE IF NOT EXISTS``, ``DELETE``, multi-row ``INSERT``) with the hook's own parameter
placeholder. Pass ``create_table=False`` and create the table yourself when your warehouse wants
other types (BigQuery's ``STRING``, partitioning, clustering).

**Bulk.** :meth:`TransactionsWarehouse.replace_windows` loads a whole shard's windows in one
database transaction per chunk of :data:`WINDOWS_PER_TRANSACTION` windows: one ``DELETE`` per
consent and window range, one per window for keys that moved, and multi-row ``INSERT`` statements
of :data:`BATCH_SIZE` rows -- a few statements per window instead of a transaction per window.

**Migration.** A table created before consents existed (key ``(conn_id, account_id,
transaction_id)``, no ``consent_id`` column) is rebuilt on first use: a new table with the new key,
every row copied with ``consent_id = 'default'`` (what those rows were), the old table dropped and
the new one renamed, in one transaction. When that is not allowed (``create_table=False``, or the
database refuses), the load fails naming the exact statements to run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from functools import cached_property
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_WAREHOUSE_CONN_ID = "openbanking_warehouse"
TRANSACTIONS_TABLE = "openbanking_transactions"

#: Columns of the transactions table and their portable SQL types, in insert order.
_COLUMN_TYPES: dict[str, str] = {
    "conn_id": "VARCHAR(250) NOT NULL",
    "consent_id": "VARCHAR(250) NOT NULL",
    "account_id": "VARCHAR(250) NOT NULL",
    "transaction_id": "VARCHAR(250) NOT NULL",
    "window_date": "VARCHAR(10) NOT NULL",
    "status": "VARCHAR(32)",
    "posted_timestamp": "VARCHAR(40)",
    "transaction_timestamp": "VARCHAR(40)",
    "amount": "NUMERIC(18, 2)",
    "signed_amount": "NUMERIC(18, 2)",
    "debit_credit_memo": "VARCHAR(16)",
    "description": "VARCHAR(1000)",
    "category": "VARCHAR(250)",
    "account_category": "VARCHAR(40)",
    "reference_transaction_id": "VARCHAR(250)",
    "record": "TEXT",
}
#: Columns of the transactions table, in insert order.
TRANSACTION_COLUMNS: tuple[str, ...] = tuple(_COLUMN_TYPES)
_KEY = ("conn_id", "consent_id", "account_id", "transaction_id")


def _create_table(table: str, columns: Sequence[str], key: Sequence[str], if_not_exists: str = "") -> str:
    body = "".join(f"    {name} {_COLUMN_TYPES[name]},\n" for name in columns)
    return f"CREATE TABLE {if_not_exists}{table} (\n{body}    PRIMARY KEY ({', '.join(key)})\n)"


#: The table as 0.x created it, before consents: no ``consent_id`` column, key
#: ``(conn_id, account_id, transaction_id)``. What :meth:`TransactionsWarehouse.ensure_table`
#: migrates from; tests and the e2e run seed a 0.x deployment's warehouse with it.
LEGACY_0X_DDL = _create_table(
    TRANSACTIONS_TABLE,
    [c for c in TRANSACTION_COLUMNS if c != "consent_id"],
    [c for c in _KEY if c != "consent_id"],
)
#: The consent of rows loaded before consents existed (the connection's own refresh token).
LEGACY_CONSENT_ID = "default"
#: Windows per database transaction of a bulk load.
WINDOWS_PER_TRANSACTION = 200

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")
#: Rows per ``executemany`` call and ids per ``IN (...)`` list.
BATCH_SIZE = 500


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain (optionally schema-qualified) SQL identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL table name: {name!r}")
    return name


_UTC_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def _date_part(timestamp: Any) -> str | None:
    """The UTC day of an ISO timestamp, or None."""
    if not isinstance(timestamp, str) or len(timestamp) < 10:
        return None
    return _utc_day(timestamp)


@functools.lru_cache(maxsize=4096)
def _utc_day(timestamp: str) -> str | None:
    """(Cached: a window's timestamps repeat across rows and runs.)"""
    if _UTC_STAMP.match(timestamp):  # the FDX form (…Z): the day is the prefix, if it is a date
        try:
            return dt.date.fromisoformat(timestamp[:10]).isoformat()
        except ValueError:
            return None
    text = timestamp.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return dt.date.fromisoformat(text[:10]).isoformat()
        except ValueError:
            return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc)
    return parsed.date().isoformat()


def window_date(record: Mapping[str, Any]) -> str | None:
    """The date the API filters a transaction on: posted date, else (pending) transaction date."""
    return _date_part(record.get("postedTimestamp")) or _date_part(record.get("transactionTimestamp"))


def as_date(value: Any, name: str = "date") -> str:
    """``YYYY-MM-DD`` from a date, datetime (UTC) or ISO string."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        found = _date_part(value) if len(value.strip()) > 10 else None
        if found:
            return found
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise ValueError(f"{name}={value!r} is not a date (expected YYYY-MM-DD)")


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any, limit: int | None = None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:limit] if limit else text


#: Fields loaded into text columns: when present (not null) they must be strings.
_TEXT_FIELDS = (
    "accountId",
    "status",
    "debitCreditMemo",
    "description",
    "category",
    "accountCategory",
    "referenceTransactionId",
)


def _check_types(account_id: str, transaction_id: str, record: Mapping[str, Any]) -> None:
    """Refuse a record whose loaded fields do not have their FDX types (a buggy server), instead
    of loading a NULL amount, a wrong day or a mangled id."""

    def bad(field: str, value: Any, what: str) -> ValueError:
        return ValueError(
            f"transaction {transaction_id!r} of account {account_id!r}: {field} {value!r} is not {what}"
        )

    amount = record.get("amount")
    if amount is not None and _number(amount) is None:
        raise bad("amount", amount, "a number")
    for field in ("postedTimestamp", "transactionTimestamp"):
        value = record.get(field)
        if value is not None and _date_part(value) is None:
            raise bad(field, value, "an ISO date-time")
    for field in _TEXT_FIELDS:
        value = record.get(field)
        if value is not None and not isinstance(value, str):
            raise bad(field, value, "a string")


def transaction_row(
    conn_id: str, account_id: str, record: Mapping[str, Any], consent_id: str = LEGACY_CONSENT_ID
) -> tuple[Any, ...]:
    """One table row (in :data:`TRANSACTION_COLUMNS` order) for one landed transaction.

    Raises ``ValueError`` naming the transaction, the field and the value when a loaded field has
    the wrong type."""
    transaction_id = record.get("transactionId")
    if transaction_id is None or transaction_id == "":
        raise ValueError(f"a transaction of account {account_id!r} has no transactionId")
    if isinstance(transaction_id, bool) or not isinstance(transaction_id, (str, int)):
        raise ValueError(
            f"a transaction of account {account_id!r}: transactionId {transaction_id!r} is not a string"
        )
    _check_types(account_id, str(transaction_id), record)
    day = window_date(record)
    if day is None:
        raise ValueError(
            f"transaction {transaction_id!r} of account {account_id!r} has neither a postedTimestamp "
            "nor a transactionTimestamp"
        )
    amount = _number(record.get("amount"))
    dcm = _text(record.get("debitCreditMemo"), 16)
    signed = None if amount is None else (-abs(amount) if dcm == "DEBIT" else abs(amount))
    return (
        conn_id,
        consent_id,
        str(record.get("accountId") or account_id),
        str(transaction_id),
        day,
        _text(record.get("status"), 32),
        _text(record.get("postedTimestamp"), 40),
        _text(record.get("transactionTimestamp"), 40),
        amount,
        signed,
        dcm,
        _text(record.get("description"), 1000),
        _text(record.get("category"), 250),
        _text(record.get("accountCategory"), 40),
        _text(record.get("referenceTransactionId"), 250),
        _record_json(record),
    )


try:  # msgspec ships with the Task SDK: the same compact, key-sorted JSON ~4x faster
    import msgspec

    _sorted_encoder = msgspec.json.Encoder(order="sorted")

    def _record_json(record: Mapping[str, Any]) -> str:
        try:
            return _sorted_encoder.encode(record).decode()
        except (TypeError, msgspec.EncodeError):
            return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)

except ImportError:  # pragma: no cover

    def _record_json(record: Mapping[str, Any]) -> str:
        return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def iter_records(path: Any) -> Iterator[dict[str, Any]]:
    """Stream the records of a landed file (an ``ObjectStoragePath`` or a URL) in any landing
    format -- JSON Lines, gzip JSON Lines, Parquet -- through
    :func:`airflow_provider_openbanking.landing.iter_records`, the project's one reader."""
    from airflow_provider_openbanking.landing import iter_records as landing_iter_records

    return landing_iter_records(path)


#: The name of the JSON Lines era (it reads every format).
iter_jsonl = iter_records


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class WindowLoad:
    """What one window replace did."""

    conn_id: str
    account_id: str
    window_start: str
    window_end: str
    deleted: int
    inserted: int
    consent_id: str = LEGACY_CONSENT_ID

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Window:
    """One landed file to load: the rows of one (connection, consent, account) for one window."""

    conn_id: str
    consent_id: str
    account_id: str
    window_start: Any
    window_end: Any
    records: Iterable[Mapping[str, Any]]


@dataclass
class BulkLoad:
    """What a bulk load did: counts, and the windows refused for bad data (their rows unchanged)."""

    windows: int = 0
    deleted: int = 0
    inserted: int = 0
    transactions: int = 0
    seconds: float = 0.0
    refused: list[str] = dataclass_field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MigrationRequiredError(RuntimeError):
    """The table has the schema of before consents and could not be migrated automatically."""


def _window_rows(window: Window) -> tuple[str, str, dict[str, tuple[Any, ...]]]:
    """Checked dates and the rows of one window keyed by transaction id (ValueError on bad data)."""
    start, end = as_date(window.window_start, "window_start"), as_date(window.window_end, "window_end")
    if start > end:
        raise ValueError(f"window_start {start} is after window_end {end}")
    rows: dict[str, tuple[Any, ...]] = {}
    for record in window.records:
        row = transaction_row(window.conn_id, window.account_id, record, window.consent_id)
        if row[2] != window.account_id:
            raise ValueError(
                f"transaction {row[3]!r} belongs to account {row[2]!r}, not to {window.account_id!r}"
            )
        rows[row[3]] = row  # a record repeated across pages counts once (last wins)
    return start, end, rows


class TransactionsWarehouse:
    """The ``openbanking_transactions`` table behind a common-sql connection.

    :param sql_conn_id: any connection whose hook is a ``DbApiHook`` (``sqlite``, ``postgres``…).
    :param table: table name (optionally ``schema.table``); plain identifiers only.
    :param create_table: create the table (portable DDL) on first use if it does not exist, and
        migrate one of the schema before consents; with False, a missing ``consent_id`` column
        fails naming the statements to run.
    :param hook: use this hook instead of resolving ``sql_conn_id`` (tests, custom hooks).
    """

    def __init__(
        self,
        sql_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID,
        table: str = TRANSACTIONS_TABLE,
        *,
        create_table: bool = True,
        hook: Any = None,
    ) -> None:
        self.sql_conn_id = sql_conn_id
        self.table = check_identifier(table)
        self.create_table = create_table
        self._hook = hook
        self._table_checked = False

    @cached_property
    def hook(self) -> Any:
        if self._hook is not None:
            return self._hook
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(self.sql_conn_id)
        except Exception as exc:
            raise RuntimeError(
                f"The warehouse connection {self.sql_conn_id!r} is not defined: create a SQL connection "
                f"with that id (e.g. AIRFLOW_CONN_{self.sql_conn_id.upper()}="
                '\'{"conn_type": "sqlite", "host": "/path/to/warehouse.db"}\') or point the DAG at '
                "another one"
            ) from exc
        hook = conn.get_hook()
        if not hasattr(hook, "placeholder") or not hasattr(hook, "get_conn"):
            raise TypeError(
                f"Connection {self.sql_conn_id!r} (type {conn.conn_type!r}) does not give a SQL "
                f"(DbApiHook) hook but {type(hook).__name__}"
            )
        return hook

    @property
    def placeholder(self) -> str:
        return str(getattr(self.hook, "placeholder", "%s"))

    def ddl(self, table: str | None = None, *, if_not_exists: bool = True) -> str:
        return _create_table(
            table or self.table, TRANSACTION_COLUMNS, _KEY, "IF NOT EXISTS " if if_not_exists else ""
        )

    def migration_sql(self) -> list[str]:
        """The statements that bring a table of the schema before consents to the current one."""
        tmp = f"{self.table}__migrating"
        short = self.table.rsplit(".", 1)[-1]
        select = ", ".join(f"'{LEGACY_CONSENT_ID}'" if c == "consent_id" else c for c in TRANSACTION_COLUMNS)
        return [
            self.ddl(tmp, if_not_exists=False),
            f"INSERT INTO {tmp} ({', '.join(TRANSACTION_COLUMNS)}) SELECT {select} FROM {self.table}",
            f"DROP TABLE {self.table}",
            f"ALTER TABLE {tmp} RENAME TO {short}",
        ]

    def _columns(self) -> set[str]:
        conn = self.hook.get_conn()
        try:
            cur = conn.cursor()
            cur.execute(f"SELECT * FROM {self.table} WHERE 1 = 0")
            names = {str(d[0]).lower() for d in cur.description or ()}
            cur.close()
            return names
        finally:
            try:
                conn.rollback()
            except Exception:  # pragma: no cover - autocommit connections
                log.debug("rollback after the column probe failed", exc_info=True)
            conn.close()

    def ensure_table(self) -> None:
        """Create the table if it does not exist and migrate one of the old schema (once per
        instance). With ``create_table=False`` only the schema is checked."""
        if self._table_checked:
            return
        if self.create_table:
            self.hook.run(self.ddl(), autocommit=False)
        try:
            columns = self._columns()
        except Exception:
            if self.create_table:
                raise
            self._table_checked = True  # a table the user manages and we cannot read: let the load say
            return
        if "consent_id" not in columns:
            self._migrate()
        self._table_checked = True

    def _migrate(self) -> None:
        statements = self.migration_sql()
        exact = ";\n".join(statements) + ";"
        if not self.create_table:
            raise MigrationRequiredError(
                f"{self.table} has no consent_id column (the schema before consents) and create_table is "
                f"off, so it is not migrated automatically. Run, in one transaction:\n{exact}"
            )
        log.warning(
            "%s: migrating to the consent-aware key (conn_id, consent_id, account_id, transaction_id)",
            self.table,
        )
        try:
            with self._transaction() as cur:
                for statement in statements:
                    cur.execute(statement)
        except Exception as exc:
            raise MigrationRequiredError(
                f"{self.table} has the schema before consents and migrating it failed "
                f"({type(exc).__name__}: {exc}); nothing was changed. Run, in one transaction:\n{exact}"
            ) from exc
        log.warning("%s: migrated; existing rows now belong to consent %r", self.table, LEGACY_CONSENT_ID)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor inside one database transaction: committed when the block ends, rolled back
        (and the error raised on) when it fails, the connection closed either way."""
        conn = self.hook.get_conn()
        if getattr(self.hook, "supports_autocommit", False):
            self.hook.set_autocommit(conn, False)
        try:
            yield conn.cursor()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def replace_window(
        self,
        conn_id: str,
        account_id: str,
        window_start: Any,
        window_end: Any,
        records: Iterable[Mapping[str, Any]],
        *,
        consent_id: str = LEGACY_CONSENT_ID,
    ) -> WindowLoad:
        """Replace the rows of ``(conn_id, consent_id, account_id)`` in ``[window_start, window_end]``
        (dates, inclusive) by ``records``, atomically. Raises ``ValueError`` on bad data, leaving
        the rows unchanged."""
        window = Window(conn_id, consent_id, account_id, window_start, window_end, records)
        start, end, rows = _window_rows(window)
        self.ensure_table()
        with self._transaction() as cur:
            deleted = self._replace(cur, window, start, end, rows)
        log.info(
            "%s: %s / %s / %s window %s..%s: %d row(s) replaced by %d",
            self.table,
            conn_id,
            consent_id,
            account_id,
            start,
            end,
            deleted,
            len(rows),
        )
        return WindowLoad(conn_id, account_id, start, end, deleted, len(rows), consent_id)

    def _replace(
        self, cur: Any, window: Window, start: str, end: str, rows: dict[str, tuple[Any, ...]]
    ) -> int:
        p = self.placeholder
        cur.execute(
            f"DELETE FROM {self.table} WHERE conn_id = {p} AND consent_id = {p} AND account_id = {p} "
            f"AND window_date >= {p} AND window_date <= {p}",
            (window.conn_id, window.consent_id, window.account_id, start, end),
        )
        deleted = max(cur.rowcount or 0, 0)
        deleted += self._delete_keys(cur, window, list(rows))
        self._insert(cur, list(rows.values()))
        return deleted

    def _delete_keys(self, cur: Any, window: Window, ids: Sequence[str]) -> int:
        """Rows of these keys outside the window (a transaction whose date moved)."""
        p = self.placeholder
        deleted = 0
        for chunk in _chunks(ids, BATCH_SIZE):
            marks = ", ".join([p] * len(chunk))
            cur.execute(
                f"DELETE FROM {self.table} WHERE conn_id = {p} AND consent_id = {p} AND account_id = {p} "
                f"AND transaction_id IN ({marks})",
                (window.conn_id, window.consent_id, window.account_id, *chunk),
            )
            deleted += max(cur.rowcount or 0, 0)
        return deleted

    def _insert(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        p = self.placeholder
        columns = ", ".join(TRANSACTION_COLUMNS)
        one = f"({', '.join([p] * len(TRANSACTION_COLUMNS))})"
        for chunk in _chunks(rows, BATCH_SIZE):
            values = ", ".join([one] * len(chunk))
            flat = [value for row in chunk for value in row]
            cur.execute(f"INSERT INTO {self.table} ({columns}) VALUES {values}", flat)

    def replace_windows(
        self, windows: Iterable[Window], *, windows_per_transaction: int = WINDOWS_PER_TRANSACTION
    ) -> BulkLoad:
        """Window-replace many windows (a shard's), one database transaction per chunk.

        A window whose file holds bad data is refused before its chunk is written (its rows stay
        as they were, the reason is in :attr:`BulkLoad.refused`); the others load.
        """
        started = time.monotonic()
        self.ensure_table()
        result = BulkLoad()
        chunk: list[tuple[Window, str, str, dict[str, tuple[Any, ...]]]] = []
        for window in windows:
            try:
                start, end, rows = _window_rows(window)
            except ValueError as exc:
                log.error(
                    "%s / %s / %s: window not loaded, its rows are unchanged: %s",
                    window.conn_id,
                    window.consent_id,
                    window.account_id,
                    exc,
                )
                result.refused.append(f"{window.conn_id} / {window.consent_id} / {window.account_id}: {exc}")
                continue
            chunk.append((window, start, end, rows))
            if len(chunk) >= windows_per_transaction:
                self._write_chunk(chunk, result)
                chunk = []
        if chunk:
            self._write_chunk(chunk, result)
        result.seconds = time.monotonic() - started
        log.info(
            "%s: %d window(s) loaded in %.2f s (%d row(s) replaced by %d), %d refused",
            self.table,
            result.windows,
            result.seconds,
            result.deleted,
            result.inserted,
            len(result.refused),
        )
        return result

    def _write_chunk(
        self, chunk: Sequence[tuple[Window, str, str, dict[str, tuple[Any, ...]]]], result: BulkLoad
    ) -> None:
        p = self.placeholder
        with self._transaction() as cur:
            deleted = 0
            # One range DELETE per (consent, window range) for all its accounts.
            groups: dict[tuple[str, str, str, str], list[str]] = {}
            for window, start, end, _rows in chunk:
                groups.setdefault((window.conn_id, window.consent_id, start, end), []).append(
                    window.account_id
                )
            for (conn_id, consent_id, start, end), accounts in groups.items():
                for part in _chunks(sorted(set(accounts)), BATCH_SIZE):
                    marks = ", ".join([p] * len(part))
                    cur.execute(
                        f"DELETE FROM {self.table} WHERE conn_id = {p} AND consent_id = {p} "
                        f"AND account_id IN ({marks}) AND window_date >= {p} AND window_date <= {p}",
                        (conn_id, consent_id, *part, start, end),
                    )
                    deleted += max(cur.rowcount or 0, 0)
            batch: list[tuple[Any, ...]] = []
            for window, _start, _end, rows in chunk:
                deleted += self._delete_keys(cur, window, list(rows))
                batch.extend(rows.values())
                if len(batch) >= BATCH_SIZE:
                    self._insert(cur, batch)
                    batch = []
            self._insert(cur, batch)
        result.windows += len(chunk)
        result.deleted += deleted
        inserted = sum(len(rows) for _w, _s, _e, rows in chunk)
        result.inserted += inserted
        result.transactions += 1

    def count(self, conn_id: str | None = None) -> int:
        sql = f"SELECT COUNT(*) FROM {self.table}"
        params: tuple[Any, ...] = ()
        if conn_id is not None:
            sql += f" WHERE conn_id = {self.placeholder}"
            params = (conn_id,)
        row = self.hook.get_first(sql, parameters=params or None)
        return int(row[0]) if row else 0


__all__ = [
    "DEFAULT_WAREHOUSE_CONN_ID",
    "LEGACY_0X_DDL",
    "LEGACY_CONSENT_ID",
    "TRANSACTIONS_TABLE",
    "TRANSACTION_COLUMNS",
    "BulkLoad",
    "MigrationRequiredError",
    "TransactionsWarehouse",
    "Window",
    "WindowLoad",
    "as_date",
    "check_identifier",
    "iter_jsonl",
    "iter_records",
    "transaction_row",
    "window_date",
]
