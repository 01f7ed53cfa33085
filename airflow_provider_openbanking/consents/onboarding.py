"""Bulk onboarding: read and validate a ``consents import`` file before anything is written.

Two formats, the same columns: JSON Lines (one object per line) or CSV with a header row.

- ``consent_id`` (required): the user's own id for the customer (see
  :func:`~.record.validate_consent_id`);
- ``refresh_token`` (required, non-empty);
- ``provider_id``, ``scopes`` (optional; ``scopes`` space/comma separated, or a JSON list).

The whole file is checked first; the first bad line (missing field, unknown column, duplicate
id, empty token, bad JSON) raises :class:`ImportFileError` naming its line number -- and never
the token. Only a file without errors is turned into records.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_openbanking.consents.record import (
    ACTIVE,
    DEFAULT_CONSENT_ID,
    ConsentRecord,
    fingerprint,
    now_iso,
    validate_consent_id,
)
from airflow_provider_openbanking.fdx import parse_scopes

REQUIRED = ("consent_id", "refresh_token")
OPTIONAL = ("provider_id", "scopes")
FORMATS = ("jsonl", "csv")


class ImportFileError(ValueError):
    """A bad import file: ``line`` is 1-based (0: the file as a whole)."""

    def __init__(self, line: int, message: str, path: str | None = None) -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"{where}line {line}: {message}" if line else f"{where}{message}")
        self.line = line


@dataclass(frozen=True)
class ImportRow:
    line: int
    consent_id: str
    refresh_token: str
    provider_id: str | None = None
    scopes: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"ImportRow(line={self.line}, consent_id={self.consent_id!r})"


def detect_format(path: str, text: str) -> str:
    """``csv`` or ``jsonl``: from the file name, else from the first non-blank character."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    first = text.lstrip()[:1]
    return "jsonl" if first == "{" else "csv"


def _jsonl_rows(text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFileError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def _csv_rows(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ImportFileError(1, "the CSV file has no header row (consent_id,refresh_token,...)")
    header = [h.strip() for h in reader.fieldnames]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ImportFileError(1, f"the CSV header lacks column(s) {', '.join(missing)}")
    reader.fieldnames = header
    for row in reader:
        if None in row:  # more cells than header columns
            raise ImportFileError(reader.line_num, "more values than header columns")
        if not any((v or "").strip() for v in row.values()):
            continue
        yield reader.line_num, {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}


def _row(number: int, data: Any) -> ImportRow:
    if not isinstance(data, Mapping):
        raise ImportFileError(number, "expected an object with consent_id and refresh_token")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ImportFileError(
            number, f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(REQUIRED + OPTIONAL)})"
        )
    for name in REQUIRED:
        if data.get(name) in (None, ""):
            raise ImportFileError(number, f"{name} is missing or empty")
    try:
        consent_id = validate_consent_id(data["consent_id"])
    except ValueError as exc:
        raise ImportFileError(number, str(exc)) from None
    token = data["refresh_token"]
    if not isinstance(token, str) or not token.strip():
        raise ImportFileError(number, "refresh_token must be a non-empty string")
    if token != token.strip() or any(c.isspace() for c in token):
        raise ImportFileError(number, "refresh_token contains whitespace (a copy-paste error?)")
    provider = data.get("provider_id")
    if provider in ("", None):
        provider = None
    elif not isinstance(provider, (str, int)):
        raise ImportFileError(number, "provider_id must be a string")
    scopes_raw = data.get("scopes")
    scopes: str | None = None
    if scopes_raw not in (None, "", []):
        try:
            scopes = " ".join(parse_scopes(scopes_raw))
        except ValueError as exc:
            raise ImportFileError(number, f"scopes {exc}") from None
    return ImportRow(number, consent_id, token, None if provider is None else str(provider), scopes)


def parse_import(text: str, fmt: str, path: str | None = None) -> list[ImportRow]:
    """Every row of an import file, validated; raises :class:`ImportFileError` at the first bad line."""
    if fmt not in FORMATS:
        raise ImportFileError(0, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", path)
    rows: list[ImportRow] = []
    seen: dict[str, int] = {}
    try:
        source = _jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text)
        for number, data in source:
            row = _row(number, data)
            if row.consent_id in seen:
                raise ImportFileError(
                    number, f"duplicate consent_id {row.consent_id!r} (first on line {seen[row.consent_id]})"
                )
            seen[row.consent_id] = number
            rows.append(row)
    except ImportFileError as exc:
        if path and not str(exc).startswith(path):
            raise ImportFileError(
                exc.line, str(exc).split(": ", 1)[1] if exc.line else str(exc), path
            ) from None
        raise
    except csv.Error as exc:
        raise ImportFileError(0, f"not a valid CSV file: {exc}", path) from None
    if not rows:
        raise ImportFileError(0, "the file holds no consent", path)
    return rows


def read_import_file(path: str, fmt: str | None = None) -> list[ImportRow]:
    """Read ``path`` (UTF-8) and :func:`parse_import` it."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ImportFileError(0, f"cannot read the file: {exc.strerror or exc}", path) from None
    except UnicodeDecodeError:
        raise ImportFileError(0, "not a UTF-8 text file", path) from None
    return parse_import(text, fmt or detect_format(path, text), path)


def records_for_import(
    conn_id: str,
    rows: Iterable[ImportRow],
    existing: Mapping[str, ConsentRecord],
    *,
    connection_refresh_token: str | None = None,
    default_provider_id: str | None = None,
) -> list[ConsentRecord]:
    """The records an import writes: a new consent, or an existing one with its token replaced
    (state back to ``active``, its shared access token dropped, its history kept)."""
    now = now_iso()
    records = []
    for row in rows:
        old = existing.get(row.consent_id)
        # ``default`` descends from the connection's own token, so the imported one takes precedence
        origin = (
            fingerprint(connection_refresh_token)
            if row.consent_id == DEFAULT_CONSENT_ID
            else fingerprint(row.refresh_token)
        )
        base = (
            old
            if old is not None
            else ConsentRecord(conn_id=conn_id, consent_id=row.consent_id, created_at=now)
        )
        records.append(
            base.replace(
                refresh_token=row.refresh_token,
                origin=origin,
                state=ACTIVE,
                scopes=row.scopes
                or (base.scopes if old is not None and old.refresh_token == row.refresh_token else None),
                provider_id=row.provider_id or base.provider_id or default_provider_id,
                updated_at=now,
                last_error=None,
                access_token=None,
                access_token_expires_at=None,
                access_token_lifetime=None,
                access_token_scope=None,
                lease_owner=None,
                lease_until=None,
            )
        )
    return records


__all__ = [
    "ImportFileError",
    "ImportRow",
    "detect_format",
    "parse_import",
    "read_import_file",
    "records_for_import",
]
