"""FDX shapes: scopes, the v5 type wrappers, dates and account-number masking.

Pure functions with no I/O, so the hook, the operators and the tests share one definition of what
a record looks like. Records leave the hook in the FDX 6 shape (no wrapper, ``accountCategory``
set), whichever version the server speaks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

ALL_SCOPES: tuple[str, ...] = (
    "ACCOUNT_BASIC",
    "ACCOUNT_DETAILED",
    "ACCOUNT_PAYMENTS",
    "INVESTMENTS",
    "TRANSACTIONS",
    "STATEMENTS",
    "CUSTOMER_CONTACT",
    "CUSTOMER_PERSONAL",
)

#: FDX 5 wrapper key -> FDX 6 ``accountCategory``.
ACCOUNT_WRAPPERS: dict[str, str] = {
    "depositAccount": "DEPOSIT_ACCOUNT",
    "loanAccount": "LOAN_ACCOUNT",
    "locAccount": "LOC_ACCOUNT",
    "investmentAccount": "INVESTMENT_ACCOUNT",
    "insuranceAccount": "INSURANCE_ACCOUNT",
    "annuityAccount": "ANNUITY_ACCOUNT",
    "commercialAccount": "COMMERCIAL_ACCOUNT",
}
TRANSACTION_WRAPPERS: dict[str, str] = {
    "depositTransaction": "DEPOSIT_ACCOUNT",
    "loanTransaction": "LOAN_ACCOUNT",
    "locTransaction": "LOC_ACCOUNT",
    "investmentTransaction": "INVESTMENT_ACCOUNT",
    "insuranceTransaction": "INSURANCE_ACCOUNT",
    "annuityTransaction": "ANNUITY_ACCOUNT",
    "commercialTransaction": "COMMERCIAL_ACCOUNT",
}
_ALL_WRAPPERS = {**ACCOUNT_WRAPPERS, **TRANSACTION_WRAPPERS}

DateLike = dt.date | dt.datetime | str


def unwrap(item: Any) -> dict[str, Any]:
    """Return an account or transaction in the FDX 6 shape.

    ``{"depositAccount": {...}}`` becomes ``{..., "accountCategory": "DEPOSIT_ACCOUNT"}``; a record
    that is already unwrapped (FDX 6) is returned as is. Anything that is not an object is a
    malformed response and raises ``ValueError`` (the hook turns it into a clear API error).
    """
    if not isinstance(item, dict):
        raise ValueError(f"expected an object, got {type(item).__name__}")
    if len(item) == 1:
        ((key, inner),) = item.items()
        category = _ALL_WRAPPERS.get(key)
        if category is not None:
            if not isinstance(inner, dict):
                raise ValueError(f"{key} holds {type(inner).__name__}, expected an object")
            if "accountCategory" in inner:
                return inner
            return {**inner, "accountCategory": category}
    return item


def to_date_param(value: DateLike | None, name: str) -> str | None:
    """Normalise a date argument to ``YYYY-MM-DD`` (what ``startTime``/``endTime`` take).

    Accepts ``date``, ``datetime`` (pendulum included; aware ones are converted to UTC first) and
    ISO strings (a bare date or a full timestamp). A bad value raises ``ValueError`` naming ``name``.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return dt.date.fromisoformat(text).isoformat()
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a date (expected YYYY-MM-DD)") from None
        return to_date_param(parsed, name)
    raise ValueError(f"{name} must be a date, datetime or YYYY-MM-DD string, got {type(value).__name__}")


def mask_account_number(number: Any) -> Any:
    """Keep the last four characters of a full account number: ``"123456789"`` -> ``"*****6789"``."""
    if not isinstance(number, str) or not number:
        return number
    keep = 4 if len(number) > 4 else 0
    return "*" * (len(number) - keep) + number[len(number) - keep :]


#: Types of JSON leaves: a record whose values are all of these has nothing nested to walk.
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def mask_account_numbers(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a record with every full ``accountNumber`` masked (nested ones too)."""
    if type(record) is dict and _JSON_SCALARS.issuperset(map(type, record.values())):
        # A flat record (every transaction): one C-level copy, no per-field Python work. This runs
        # once per landed record, so it is on the operators' hot path.
        flat = record.copy()
        if "accountNumber" in flat:
            flat["accountNumber"] = mask_account_number(flat["accountNumber"])
        return flat
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "accountNumber":
            out[key] = mask_account_number(value)
        elif type(value) in _JSON_SCALARS:  # before the (slow) ABC check below
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = mask_account_numbers(value)
        elif isinstance(value, list):
            out[key] = [mask_account_numbers(v) if isinstance(v, Mapping) else v for v in value]
        else:
            out[key] = value
    return out


def parse_scopes(value: Any) -> tuple[str, ...]:
    """Parse scopes given as a space/comma separated string or a list; ``ValueError`` on unknown ones."""
    if value is None or value == "":
        return ALL_SCOPES
    if isinstance(value, str):
        items = [s for s in value.replace(",", " ").split() if s]
    elif isinstance(value, (list, tuple)):
        items = [str(s).strip() for s in value if str(s).strip()]
    else:
        raise ValueError(f"must be a space-separated string or a list, got {type(value).__name__}")
    unknown = [s for s in items if s not in ALL_SCOPES]
    if unknown:
        raise ValueError(f"has unknown scope(s) {', '.join(unknown)}; known: {' '.join(ALL_SCOPES)}")
    if not items:
        raise ValueError("is empty")
    return tuple(dict.fromkeys(items))
