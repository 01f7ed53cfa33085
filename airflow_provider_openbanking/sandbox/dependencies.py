"""What the routers share: the :class:`Sandbox` dependency and the request checks every FDX
endpoint makes (bearer token, consent and scope, account ownership, paging, date window).

Checks raise :class:`~.responses.Denied` carrying the ready error response.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import Response

from .data import DAY, Account, Customer, date_to_epoch, iso_ts
from .responses import MAX_LIMIT, Denied, decode_offset, encode_offset, fdx_error, invalid_token
from .state import AccessToken, KnobError, Sandbox

DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


async def get_sandbox(request: Request) -> Sandbox:
    """The app's :class:`Sandbox` (set by ``create_app``)."""
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]


def bearer(sb: Sandbox, request: Request) -> AccessToken:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() != "bearer " or not auth[7:].strip():
        raise Denied(invalid_token("Missing bearer access token"))
    at = sb.lookup_access(auth[7:].strip())
    if at is None:
        raise Denied(invalid_token("Unknown or expired access token"))
    return at


def customer_token(sb: Sandbox, request: Request, scope: str | None) -> AccessToken:
    at = bearer(sb, request)
    consent = at.consent
    if consent is None:
        raise Denied(
            fdx_error(401, "401", "A customer access token is required", "client-credentials token used")
        )
    if consent.revoked or consent.bank_revoked:
        raise Denied(fdx_error(401, "602", "Customer not authorized", "The consent was revoked"))
    if scope is not None and scope not in at.scopes:
        raise Denied(fdx_error(401, "602", "Customer not authorized", f"Scope {scope} was not granted"))
    return at


def customer_of(sb: Sandbox, at: AccessToken) -> Customer:
    assert at.consent is not None
    return sb.bank.customer_by_id[at.consent.customer_id]


def own_account(sb: Sandbox, at: AccessToken, account_id: str) -> Account:
    account = sb.bank.account_by_id.get(account_id)
    if account is None or at.consent is None or account.customer_id != at.consent.customer_id:
        raise Denied(
            fdx_error(404, "701", "Account not found", f"No account {account_id!r} for this customer")
        )
    return account


def paging(sb: Sandbox, request: Request) -> tuple[int, int]:
    q = request.query_params
    raw_limit = q.get("limit")
    limit = sb.knobs.page_size
    if raw_limit is not None:  # ``limit=`` (empty) is not an integer: refused, as 0 is
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if limit < 1:
            raise Denied(
                fdx_error(400, "401", "Invalid input", f"limit must be a positive integer: {raw_limit!r}")
            )
        limit = min(limit, MAX_LIMIT)
    raw_offset = q.get("offset")
    offset = 0
    if raw_offset:
        try:
            offset = decode_offset(raw_offset)
        except ValueError:
            raise Denied(fdx_error(400, "401", "Invalid input", f"Invalid offset {raw_offset!r}")) from None
    return offset, limit


def page_doc(request: Request, offset: int, limit: int, total: int) -> dict[str, Any]:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "offset"]
    path = request.url.path

    def href(off: str) -> dict[str, str]:
        return {"href": path + "?" + urlencode([*kept, ("offset", off)])}

    if offset > 0 and offset >= total:
        # never an offset this server handed out (or the data shrank under it): a conforming
        # server refuses it instead of serving an empty page whose prevOffset is past the data
        raise Denied(
            fdx_error(
                400,
                "401",
                "Invalid input",
                f"offset {request.query_params.get('offset')!r} is past the end of the {total} element(s)",
            )
        )
    page: dict[str, Any] = {"totalElements": total}
    links: dict[str, Any] = {}
    if offset + limit < total:
        page["nextOffset"] = nxt = encode_offset(offset + limit)
        links["next"] = href(nxt)
    if offset > 0:
        page["prevOffset"] = prev = encode_offset(max(0, offset - limit))
        links["prev"] = href(prev)
    doc: dict[str, Any] = {"page": page}
    if links:
        doc["links"] = links
    return doc


def parse_day(raw: str | None, name: str) -> dt.date | None:
    if raw is None:
        return None
    # ``startTime=`` (empty) is not a DateString: refused like any other malformed date
    try:
        if not DATE_RE.fullmatch(raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise Denied(
            fdx_error(
                400, "702", "Invalid start or end date", f"{name} {raw!r} is not a valid YYYY-MM-DD date"
            )
        ) from None


def date_window(sb: Sandbox, request: Request) -> tuple[int | None, int | None]:
    start = parse_day(request.query_params.get("startTime"), "startTime")
    end = parse_day(request.query_params.get("endTime"), "endTime")
    if sb.knobs.strict_fdx53:  # a strict FDX 5.3 server checks the DateStrings, then serves every record
        return None, None
    if start and end and end < start:
        raise Denied(fdx_error(400, "703", "Invalid date range", "endTime is before startTime"))
    return (
        date_to_epoch(start) if start else None,
        date_to_epoch(end) + DAY - 1 if end else None,
    )


def rate_limited(sb: Sandbox, wait: float) -> Response:
    return fdx_error(
        429,
        "1207",
        "Too many requests",
        f"over the rate limit of {sb.knobs.rate_limit_rps:g} requests/s for this client",
        {"Retry-After": str(max(1, math.ceil(wait)))},
    )


def empty_1107() -> Response:
    return fdx_error(404, "1107", "No data found for the given parameters", "empty result")


def balance_as_of(sb: Sandbox) -> str:
    return iso_ts(sb.now)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise KnobError("body must be JSON") from None
