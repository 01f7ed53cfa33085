"""Client-side checks that a server sent what was asked for: these accounts, this date window.

``accountIds`` is not an FDX 5.3 parameter and a server may ignore ``startTime``/``endTime``
(Stoplight Prism serving the FDX 5.3 description does both), so the hook never trusts a filter it
sent: it keeps only the records that match, counts the others in ``PageStats.dropped`` and logs
them once per call. A window's landing then holds exactly that window, and the warehouse's window
replace can never leave a row outside the window it replaced. Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from airflow_provider_openbanking.pagination import PageStats

log = logging.getLogger(__name__)

#: Fields whose date places a record in a window, first present wins. A pending transaction has no
#: posted time yet: servers place it on its transaction date (so does the sandbox).
TRANSACTION_DATE_FIELDS = ("postedTimestamp", "transactionTimestamp")
STATEMENT_DATE_FIELDS = ("statementDate",)


def utc_day(value: Any) -> str | None:
    """``YYYY-MM-DD`` (UTC) of an FDX date or timestamp; None when it is not one.

    ``2026-10-01``, ``2026-10-01T12:00:00.000Z`` and naive timestamps are read as written (the fast
    path: this runs once per record); a timestamp with an offset is converted to UTC first, as the
    hook's own window arguments are.
    """
    if not isinstance(value, str) or len(value) < 10:
        return None
    day = value[:10]
    if len(value) > 10 and value[-1] not in "Zz" and ("+" in value[19:] or "-" in value[19:]):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is not None:
            return parsed.astimezone(dt.timezone.utc).date().isoformat()
        return parsed.date().isoformat()
    if day[4] != "-" or day[7] != "-" or not (day[:4] + day[5:7] + day[8:]).isdigit():
        return None
    return day


def record_day(record: Mapping[str, Any], fields: tuple[str, ...]) -> str | None:
    """The UTC day of the first of ``fields`` the record has, or None."""
    for name in fields:
        value = record.get(name)
        if value:
            return utc_day(value)
    return None


def keep_in_window(
    records: Iterator[Any],
    start: str | None,
    end: str | None,
    fields: tuple[str, ...],
    *,
    stats: PageStats | None,
    endpoint: str,
) -> Iterator[Any]:
    """The records whose day (see :func:`record_day`) is in ``[start, end]`` (``YYYY-MM-DD``,
    both inclusive, either may be None); the others are counted and logged, once, when the walk ends.

    A record without a readable date cannot be placed outside the window and is kept; so is
    anything that is not an object (the caller's own checks report it as malformed).
    """
    if start is None and end is None:
        yield from records
        return
    low = start or "0000-00-00"
    high = end or "9999-99-99"
    first = fields[0]
    dropped = 0
    try:
        for record in records:
            # hot path (once per landed record): a UTC timestamp in the first field, compared as text
            value = record.get(first) if type(record) is dict else None
            if (
                type(value) is str
                and (len(value) == 10 or value[-1:] == "Z")
                and value[4:5] == "-" == value[7:8]
                and value[:4].isdigit()
            ):
                day: str | None = value[:10]
            elif isinstance(record, Mapping):
                day = record_day(record, fields)
            else:
                day = None
            if day is None or low <= day <= high:
                yield record
            else:
                dropped += 1
                if stats is not None:
                    stats.dropped += 1
    finally:
        if dropped:
            log.warning(
                "%s: dropped %d record(s) dated outside the requested window %s..%s (%s); the server "
                "ignored startTime/endTime",
                endpoint,
                dropped,
                start or "",
                end or "",
                " or ".join(fields),
            )


def keep_accounts(
    records: Iterator[dict[str, Any]],
    wanted: Collection[str],
    *,
    stats: PageStats | None,
    endpoint: str,
    key: Callable[[Mapping[str, Any]], Any] = lambda r: r.get("accountId"),
) -> Iterator[dict[str, Any]]:
    """The records of the ``wanted`` accounts; the others are counted and logged once."""
    dropped = 0
    try:
        for record in records:
            if str(key(record)) in wanted:
                yield record
            else:
                dropped += 1
                if stats is not None:
                    stats.dropped += 1
    finally:
        if dropped:
            log.warning(
                "%s: dropped %d account(s) that were not asked for (the server ignored accountIds)",
                endpoint,
                dropped,
            )
