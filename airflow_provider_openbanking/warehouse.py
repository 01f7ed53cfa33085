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

Key: ``(conn_id, account_id, transaction_id)``. Only portable SQL is used (``CREATE TABLE IF NOT
EXISTS``, ``DELETE``, ``INSERT``) with the hook's own parameter placeholder. Pass
``create_table=False`` and create the table yourself when your warehouse wants other types
(BigQuery's ``STRING``, partitioning, clustering).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_WAREHOUSE_CONN_ID = "openbanking_warehouse"
TRANSACTIONS_TABLE = "openbanking_transactions"

#: Columns of the transactions table, in insert order.
TRANSACTION_COLUMNS: tuple[str, ...] = (
    "conn_id",
    "account_id",
    "transaction_id",
    "window_date",
    "status",
    "posted_timestamp",
    "transaction_timestamp",
    "amount",
    "signed_amount",
    "debit_credit_memo",
    "description",
    "category",
    "account_category",
    "reference_transaction_id",
    "record",
)

_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    conn_id VARCHAR(250) NOT NULL,
    account_id VARCHAR(250) NOT NULL,
    transaction_id VARCHAR(250) NOT NULL,
    window_date VARCHAR(10) NOT NULL,
    status VARCHAR(32),
    posted_timestamp VARCHAR(40),
    transaction_timestamp VARCHAR(40),
    amount NUMERIC(18, 2),
    signed_amount NUMERIC(18, 2),
    debit_credit_memo VARCHAR(16),
    description VARCHAR(1000),
    category VARCHAR(250),
    account_category VARCHAR(40),
    reference_transaction_id VARCHAR(250),
    record TEXT,
    PRIMARY KEY (conn_id, account_id, transaction_id)
)"""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")
#: Rows per ``executemany`` call and ids per ``IN (...)`` list.
BATCH_SIZE = 500


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain (optionally schema-qualified) SQL identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL table name: {name!r}")
    return name


def _date_part(timestamp: Any) -> str | None:
    if not isinstance(timestamp, str) or len(timestamp) < 10:
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


def transaction_row(conn_id: str, account_id: str, record: Mapping[str, Any]) -> tuple[Any, ...]:
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
        json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str),
    )


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TransactionsWarehouse:
    """The ``openbanking_transactions`` table behind a common-sql connection.

    :param sql_conn_id: any connection whose hook is a ``DbApiHook`` (``sqlite``, ``postgres``…).
    :param table: table name (optionally ``schema.table``); plain identifiers only.
    :param create_table: create the table (portable DDL) on first use if it does not exist.
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

    def ddl(self) -> str:
        return _DDL.format(table=self.table)

    def ensure_table(self) -> None:
        """Create the table if it does not exist (once per instance; no-op with create_table=False)."""
        if self._table_checked or not self.create_table:
            return
        self.hook.run(self.ddl(), autocommit=False)
        self._table_checked = True

    def _connect(self) -> Any:
        conn = self.hook.get_conn()
        if getattr(self.hook, "supports_autocommit", False):
            self.hook.set_autocommit(conn, False)
        return conn

    def replace_window(
        self,
        conn_id: str,
        account_id: str,
        window_start: Any,
        window_end: Any,
        records: Iterable[Mapping[str, Any]],
    ) -> WindowLoad:
        """Replace the rows of ``(conn_id, account_id)`` in ``[window_start, window_end]`` (dates,
        inclusive) by ``records``, atomically."""
        start, end = as_date(window_start, "window_start"), as_date(window_end, "window_end")
        if start > end:
            raise ValueError(f"window_start {start} is after window_end {end}")
        rows: dict[str, tuple[Any, ...]] = {}
        for record in records:
            row = transaction_row(conn_id, account_id, record)
            if row[1] != account_id:
                raise ValueError(
                    f"transaction {row[2]!r} belongs to account {row[1]!r}, not to {account_id!r}"
                )
            rows[row[2]] = row  # a record repeated across pages counts once (last wins)
        self.ensure_table()
        p = self.placeholder
        columns = ", ".join(TRANSACTION_COLUMNS)
        insert = f"INSERT INTO {self.table} ({columns}) VALUES ({', '.join([p] * len(TRANSACTION_COLUMNS))})"
        delete_window = (
            f"DELETE FROM {self.table} WHERE conn_id = {p} AND account_id = {p} "
            f"AND window_date >= {p} AND window_date <= {p}"
        )
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute(delete_window, (conn_id, account_id, start, end))
            deleted = max(cur.rowcount or 0, 0)
            ids = list(rows)
            for chunk in _chunks(ids, BATCH_SIZE):
                marks = ", ".join([p] * len(chunk))
                cur.execute(
                    f"DELETE FROM {self.table} WHERE conn_id = {p} AND account_id = {p} "
                    f"AND transaction_id IN ({marks})",
                    (conn_id, account_id, *chunk),
                )
                deleted += max(cur.rowcount or 0, 0)
            values = list(rows.values())
            for chunk in _chunks(values, BATCH_SIZE):
                cur.executemany(insert, list(chunk))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()
        result = WindowLoad(conn_id, account_id, start, end, deleted, len(rows))
        log.info(
            "%s: %s / %s window %s..%s: %d row(s) replaced by %d",
            self.table,
            conn_id,
            account_id,
            start,
            end,
            deleted,
            len(rows),
        )
        return result

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
    "TRANSACTIONS_TABLE",
    "TRANSACTION_COLUMNS",
    "TransactionsWarehouse",
    "WindowLoad",
    "as_date",
    "check_identifier",
    "iter_jsonl",
    "iter_records",
    "transaction_row",
    "window_date",
]
