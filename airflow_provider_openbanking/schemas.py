"""Typed columns of the landed datasets, for Parquet: what each FDX field becomes, and back.

Each dataset has an explicit column list (:data:`DATASET_COLUMNS`) taken from FDX 5.3 (the union of
the deposit, line-of-credit, loan and investment variants, so one file holds any account type):

========== =============================================================================
kind       Arrow type and what a value must be
========== =============================================================================
``str``    ``string``: a JSON string (ids and enums included: they are strings in FDX)
``float``  ``float64``: a JSON number (amounts: the API sends binary floats, so float64 keeps
           exactly what was sent; a decimal would only round-trip it)
``int``    ``int64``: a JSON integer
``bool``   ``bool``: ``true``/``false``
``ts``     ``timestamp[us, UTC]``: an ISO 8601 date-time (an offset is converted to UTC; a bare
           date or a time without an offset is taken as UTC)
``date``   ``date32``: an ISO 8601 date (``YYYY-MM-DD``)
``json``   ``string`` holding the value as JSON (nested objects and arrays: ``currency``,
           ``holdings``, ``links``...); the column's metadata says so
========== =============================================================================

Every field a record has that its dataset's columns do not name lands in one more column,
:data:`EXTRA_COLUMN` (a JSON object as a string, null when there is none), and so do explicit
``null`` values of named fields (to tell them from absent ones): nothing the bank sent is lost, and
:func:`batch_to_records` gives back the records as they were sent (timestamps in UTC, as
``YYYY-MM-DDThh:mm:ss.sssZ``).

A value that cannot take its column's type (``"amount": "abc"``) raises :class:`RecordTypeError`
naming the field, the value's type and the record -- never the value, which may be personal data.

This module imports pyarrow: import it only when a Parquet file is written or read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

#: The column holding, as one JSON object, every field that has no column of its own.
EXTRA_COLUMN = "_extra"
#: Field metadata key marking a ``json`` column (its strings are JSON documents).
KIND_KEY = b"openbanking.kind"

_STR, _FLOAT, _INT, _BOOL, _TS, _DATE, _JSON = "str", "float", "int", "bool", "ts", "date", "json"

_TRANSACTION = (
    ("accountId", _STR),
    ("accountCategory", _STR),  # the FDX 5 wrapper the record came in (fdx.unwrap)
    ("transactionId", _STR),
    ("referenceTransactionId", _STR),
    ("postedTimestamp", _TS),
    ("transactionTimestamp", _TS),
    ("status", _STR),
    ("debitCreditMemo", _STR),
    ("amount", _FLOAT),
    ("foreignAmount", _FLOAT),
    ("foreignCurrency", _STR),
    ("description", _STR),
    ("memo", _STR),
    ("category", _STR),
    ("subCategory", _STR),
    ("reference", _STR),
    ("transactionType", _STR),
    ("payee", _STR),
    ("checkNumber", _INT),
    # investment transactions
    ("securityId", _STR),
    ("securityIdType", _STR),
    ("securityType", _STR),
    ("symbol", _STR),
    ("units", _FLOAT),
    ("unitPrice", _FLOAT),
    ("unitType", _STR),
    ("fees", _FLOAT),
    ("commission", _FLOAT),
    ("fiAttributes", _JSON),
)

_ACCOUNT = (
    ("accountId", _STR),
    ("accountCategory", _STR),
    ("accountType", _STR),
    ("status", _STR),
    ("accountNumberDisplay", _STR),
    ("accountNumber", _STR),
    ("productName", _STR),
    ("nickname", _STR),
    ("description", _STR),
    ("currency", _JSON),
    ("balanceAsOf", _TS),
    # deposit
    ("currentBalance", _FLOAT),
    ("availableBalance", _FLOAT),
    ("routingTransitNumber", _STR),
    # line of credit
    ("creditLine", _FLOAT),
    ("availableCredit", _FLOAT),
    ("minimumPaymentAmount", _FLOAT),
    ("pastDueAmount", _FLOAT),
    ("lastStmtBalance", _FLOAT),
    ("lastStmtDate", _DATE),
    ("purchasesApr", _FLOAT),
    ("advancesApr", _FLOAT),
    # loan (and line of credit)
    ("principalBalance", _FLOAT),
    ("escrowBalance", _FLOAT),
    ("originalPrincipal", _FLOAT),
    ("originatingDate", _DATE),
    ("loanTerm", _INT),
    ("nextPaymentAmount", _FLOAT),
    ("nextPaymentDate", _DATE),
    ("lastPaymentAmount", _FLOAT),
    ("lastPaymentDate", _DATE),
    ("maturityDate", _DATE),
    ("interestPaidYearToDate", _FLOAT),
    ("interestRate", _FLOAT),
    ("interestRateType", _STR),
    # investment
    ("availableCashBalance", _FLOAT),
    ("currentValue", _FLOAT),
    ("holdings", _JSON),
    ("fiAttributes", _JSON),
)

_HOLDING = (
    ("accountId", _STR),
    ("securityId", _STR),
    ("securityIdType", _STR),
    ("holdingName", _STR),
    ("holdingType", _STR),
    ("holdingSubType", _STR),
    ("symbol", _STR),
    ("purchasedPrice", _FLOAT),
    ("currentUnitPrice", _FLOAT),
    ("currentUnitPriceDate", _DATE),
    ("units", _FLOAT),
    ("marketValue", _FLOAT),
    ("faceValue", _FLOAT),
    ("cashAccount", _BOOL),
    ("currency", _JSON),
    ("taxLots", _JSON),
    ("fiAttributes", _JSON),
)

#: Column names and kinds of every dataset the operators land (plus the consent health records).
DATASET_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "transactions": _TRANSACTION,
    "accounts": _ACCOUNT,
    "holdings": _HOLDING,
    "statements": (
        ("accountId", _STR),
        ("statementId", _STR),
        ("statementDate", _DATE),
        ("description", _STR),
        ("status", _STR),
        ("links", _JSON),
    ),
    "contacts": (
        ("accountId", _STR),
        ("holders", _JSON),
        ("emails", _JSON),
        ("addresses", _JSON),
        ("telephones", _JSON),
    ),
    "payment_networks": (
        ("accountId", _STR),
        ("bankId", _STR),
        ("identifier", _STR),
        ("type", _STR),
        ("transferIn", _BOOL),
        ("transferOut", _BOOL),
    ),
    "customer": (
        ("customerId", _STR),
        ("type", _STR),
        ("name", _JSON),
        ("email", _JSON),
        ("addresses", _JSON),
        ("telephones", _JSON),
        ("accounts", _JSON),
    ),
    "providers": (("id", _STR), ("name", _STR), ("status", _STR)),
    "consent_health": (
        ("conn_id", _STR),
        ("healthy", _BOOL),
        ("state", _STR),
        ("summary", _STR),
        ("checked_at", _TS),
    ),
}

_ARROW_TYPES: dict[str, pa.DataType] = {
    _STR: pa.string(),
    _FLOAT: pa.float64(),
    _INT: pa.int64(),
    _BOOL: pa.bool_(),
    _TS: pa.timestamp("us", tz="UTC"),
    _DATE: pa.date32(),
    _JSON: pa.string(),
}
#: The Python types a JSON value of each kind may have (bool is not a number here).
_ACCEPTED: dict[str, frozenset[type]] = {
    _STR: frozenset({str, type(None)}),
    _FLOAT: frozenset({float, int, type(None)}),
    _INT: frozenset({int, type(None)}),
    _BOOL: frozenset({bool, type(None)}),
    _TS: frozenset({str, type(None)}),
    _DATE: frozenset({str, type(None)}),
}
_WANTED = {
    _STR: "a string",
    _FLOAT: "a number",
    _INT: "an integer",
    _BOOL: "a boolean",
    _TS: "an ISO 8601 date-time",
    _DATE: "an ISO 8601 date (YYYY-MM-DD)",
}
#: Ids named in errors, by preference, to point at the refused record.
_RECORD_IDS = ("transactionId", "statementId", "securityId", "accountId", "customerId", "id")


class RecordTypeError(ValueError):
    """A record whose field cannot take its column's type. Carries the field, the value's type and
    the record's position and id (never the value)."""

    def __init__(self, dataset: str, field: str, value_type: str, wanted: str, index: int, record_id: Any):
        self.dataset, self.field, self.value_type, self.wanted = dataset, field, value_type, wanted
        self.index, self.record_id = index, record_id
        where = f"record {index + 1}" + (f" ({record_id})" if record_id else "")
        super().__init__(
            f"{dataset}: field {field!r} is {_article(value_type)} where the Parquet schema wants "
            f"{wanted} ({where})"
        )


def _article(type_name: str) -> str:
    return f"{'an' if type_name[:1] in 'aeiou' else 'a'} {type_name}"


def _type_name(value: Any) -> str:
    return {
        str: "string",
        float: "number",
        int: "integer",
        bool: "boolean",
        dict: "object",
        list: "array",
    }.get(type(value), type(value).__name__)


def _record_id(record: Mapping[str, Any]) -> str | None:
    for key in _RECORD_IDS:
        value = record.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return f"{key} {value!r}"
    return None


#: Columns whose values are (nearly) all different: no dictionary encoding, it would only cost.
_UNIQUE = frozenset({"transactionId", "referenceTransactionId", "reference", "statementId", "customerId"})


def dictionary_columns(dataset: str) -> list[str]:
    """The columns of ``dataset`` worth dictionary-encoding in Parquet: its strings (enums,
    descriptions, account ids) but for the unique ids. Numbers and timestamps are stored plain
    (zstd compresses them), which writes faster and, here, smaller."""
    return [
        name
        for name, kind in DATASET_COLUMNS.get(dataset, ())
        if kind in (_STR, _JSON) and name not in _UNIQUE
    ]


def arrow_schema(dataset: str) -> pa.Schema:
    """The Arrow schema of ``dataset`` (no typed column for an unknown one: everything in
    :data:`EXTRA_COLUMN`)."""
    fields = [
        pa.field(name, _ARROW_TYPES[kind], metadata={KIND_KEY: kind.encode()})
        for name, kind in DATASET_COLUMNS.get(dataset, ())
    ]
    fields.append(pa.field(EXTRA_COLUMN, pa.string(), metadata={KIND_KEY: _JSON.encode()}))
    return pa.schema(fields, metadata={b"openbanking.dataset": dataset.encode()})


_msgspec: Any
try:  # ships with the Task SDK: C-speed type checks and JSON
    import msgspec as _msgspec

    _encode = _msgspec.json.Encoder().encode

    def _dumps(value: Any) -> str:
        try:
            return _encode(value).decode()
        except (TypeError, _msgspec.EncodeError):
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)

    _loads: Any = _msgspec.json.decode
except ImportError:  # pragma: no cover
    _msgspec = None

    def _dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)

    _loads = json.loads


def _parse_timestamp(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _parse_date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        return None


class RecordBatcher:
    """Turns lists of records of one dataset into Arrow record batches of :func:`arrow_schema`.

    Built for speed, as it runs for every record: pyarrow's own conversion of the dicts (a struct
    array of the columns the batch has: a batch of deposit transactions has no investment fields)
    checks strings, booleans and timestamps; a ``msgspec`` validation (in C) checks the numbers,
    which pyarrow would coerce (``true`` -> 1.0, 1.5 -> 1). Only the unusual cases -- unknown
    fields, explicit nulls, a refused value, a timestamp without an offset -- take a slower,
    record-by-record path.
    """

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.columns = DATASET_COLUMNS.get(dataset, ())
        self.schema = arrow_schema(dataset)
        self._known = frozenset(name for name, _ in self.columns)
        self._direct = [(name, kind) for name, kind in self.columns if kind != _JSON]
        self._json = [name for name, kind in self.columns if kind == _JSON]
        self._numeric = [(name, kind) for name, kind in self._direct if kind in (_FLOAT, _INT)]
        self._structs: dict[tuple[str, ...], Any] = {}
        self._validators: dict[tuple[str, ...], Any] = {}

    def _struct_type(self, present: tuple[str, ...]) -> pa.StructType:
        struct = self._structs.get(present)
        if struct is None:
            kinds = dict(self._direct)
            staged = {_TS: pa.string(), _DATE: pa.string()}
            struct = pa.struct([pa.field(n, staged.get(kinds[n], _ARROW_TYPES[kinds[n]])) for n in present])
            self._structs[present] = struct
        return struct

    def _validator(self, numeric: tuple[str, ...]) -> Any:
        """A C-level check that the ``numeric`` fields hold numbers (None without msgspec)."""
        if _msgspec is None or not numeric:
            return None
        validate = self._validators.get(numeric)
        if validate is None:
            kinds = dict(self._numeric)
            row = _msgspec.defstruct(
                f"_{self.dataset}_numbers",
                [(n, (float if kinds[n] == _FLOAT else int) | None, None) for n in numeric],  # type: ignore[operator]
                kw_only=True,
            )
            rows = list[row]  # type: ignore[valid-type]

            def validate(records: Sequence[Mapping[str, Any]]) -> None:
                _msgspec.convert(records, rows)

            self._validators[numeric] = validate
        return validate

    def to_batch(self, records: Sequence[Mapping[str, Any]], first_index: int = 0) -> pa.RecordBatch:
        """One batch of ``records`` (``first_index``: the position of the first, for errors)."""
        if not all(type(r) is dict for r in records):
            records = [dict(r) for r in records]
        keys = set().union(*records)
        present = tuple(name for name, _ in self._direct if name in keys)
        numeric = tuple(name for name, _ in self._numeric if name in keys)
        validate = self._validator(numeric)
        if validate is None and numeric:
            self._check_types(records, first_index)
        elif validate is not None:
            try:
                validate(records)
            except (_msgspec.ValidationError, TypeError):
                self._check_types(records, first_index)  # finds and names the refused value
        arrays: dict[str, pa.Array] = {}
        if present:
            try:
                struct = pa.array(records, type=self._struct_type(present))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                self._check_types(records, first_index)
                raise
            kinds = dict(self._direct)
            for i, name in enumerate(present):
                column = struct.field(i)
                if kinds[name] in (_TS, _DATE):
                    column = self._temporal(name, kinds[name], column, records, first_index)
                arrays[name] = column
        for name in self._json:
            if name in keys:
                values = [r.get(name) for r in records]
                arrays[name] = pa.array([None if v is None else _dumps(v) for v in values], type=pa.string())
        landed = sum(len(a) - a.null_count for a in arrays.values())
        n = len(records)
        ordered = [
            arrays[name] if name in arrays else pa.nulls(n, _ARROW_TYPES[kind]) for name, kind in self.columns
        ]
        ordered.append(pa.array(self._extras(records, keys, landed), type=pa.string()))
        return pa.RecordBatch.from_arrays(ordered, schema=self.schema)

    def _refuse(
        self, name: str, kind: str, index: int, value: Any, records: Sequence[Mapping[str, Any]], first: int
    ) -> RecordTypeError:
        type_name = _type_name(value)
        if kind in (_TS, _DATE) and isinstance(value, str):
            type_name = "string that is not " + _WANTED[kind]
        return RecordTypeError(
            self.dataset, name, type_name, _WANTED[kind], first + index, _record_id(records[index])
        )

    def _check_types(self, records: Sequence[Mapping[str, Any]], first: int) -> None:
        for name, kind in self._direct:
            accepted = _ACCEPTED[kind]
            values = [r.get(name) for r in records]
            if not set(map(type, values)) <= accepted:
                for i, value in enumerate(values):
                    if type(value) not in accepted:
                        raise self._refuse(name, kind, i, value, records, first)

    def _temporal(
        self, name: str, kind: str, column: pa.Array, records: Sequence[Mapping[str, Any]], first: int
    ) -> pa.Array:
        target = _ARROW_TYPES[kind]
        try:
            return pc.cast(column, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # a bare date, a time without an offset, or not a date at all: value by value
        parse = _parse_timestamp if kind == _TS else _parse_date
        parsed: list[Any] = []
        for i, value in enumerate(column.to_pylist()):
            out = None if value is None else parse(value)
            if value is not None and out is None:
                raise self._refuse(name, kind, i, value, records, first)
            parsed.append(out)
        return pa.array(parsed, type=target)

    def _extras(self, records: Sequence[Mapping[str, Any]], keys: set[str], landed: int) -> list[str | None]:
        """The :data:`EXTRA_COLUMN` values. Decided for the whole batch first: when every field
        has a column (``keys``: all the batch's field names) and as many values landed as the
        records have fields, there is no unknown field and no explicit null anywhere."""
        known = self._known
        if known.issuperset(keys) and landed == sum(map(len, records)):
            return [None] * len(records)
        out: list[str | None] = []
        for record in records:
            if known.issuperset(record) and None not in record.values():
                out.append(None)
                continue
            extra = {k: v for k, v in record.items() if k not in known or v is None}
            out.append(_dumps(extra) if extra else None)
        return out


def _format_timestamp(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    micro = value.microsecond
    fraction = f"{micro // 1000:03d}" if micro % 1000 == 0 else f"{micro:06d}"
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z"


def _to_json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _format_timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


def batch_to_records(batch: pa.RecordBatch | pa.Table) -> list[dict[str, Any]]:
    """The records of ``batch`` as JSON-shaped dicts (the inverse of :meth:`RecordBatcher.to_batch`).

    Null columns are left out, ``json`` columns and :data:`EXTRA_COLUMN` are decoded (the latter
    merged into the record), timestamps become ISO strings in UTC, dates ``YYYY-MM-DD``. Files
    written by other tools read too (their columns as they are, temporal ones as ISO strings).
    """
    names: list[str] = []
    columns: list[list[Any]] = []
    extra: list[Any] | None = None
    for i, field in enumerate(batch.schema):
        values = batch.column(i).to_pylist()
        kind = (field.metadata or {}).get(KIND_KEY)
        if field.name == EXTRA_COLUMN and kind == _JSON.encode():
            extra = values
            continue
        if kind == _JSON.encode():
            values = [None if v is None else _loads(v) for v in values]
        elif pa.types.is_temporal(field.type) or pa.types.is_binary(field.type):
            values = [None if v is None else _to_json_value(v) for v in values]
        names.append(field.name)
        columns.append(values)
    records: list[dict[str, Any]] = []
    for row in zip(*columns, strict=True) if columns else ([()] * batch.num_rows):
        records.append({name: value for name, value in zip(names, row, strict=True) if value is not None})
    if extra is not None:
        for record, text in zip(records, extra, strict=True):
            if text is not None:
                record.update(_loads(text))
    return records


__all__ = [
    "DATASET_COLUMNS",
    "EXTRA_COLUMN",
    "RecordBatcher",
    "RecordTypeError",
    "arrow_schema",
    "batch_to_records",
    "dictionary_columns",
]
