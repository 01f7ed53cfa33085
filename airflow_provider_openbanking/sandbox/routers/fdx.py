"""FDX 5 data endpoints under ``/api/fdx/5`` (customer bearer token), and the signed statement
files under ``/_files`` that a statement redirect points to."""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..data import DAY, Account, date_to_epoch
from ..dependencies import (
    SandboxDep,
    balance_as_of,
    customer_of,
    customer_token,
    date_window,
    empty_1107,
    own_account,
    page_doc,
    paging,
)
from ..pdf import build_pdf
from ..responses import FDX, dumps, fdx_error, json_response, json_response_with_items
from ..state import Sandbox

router = APIRouter(prefix=FDX, tags=["fdx"])
files = APIRouter(prefix="/_files", tags=["files"])

#: Bytes of rendered transaction pages kept by :class:`PageCache` (least recently used out first).
PAGE_CACHE_BYTES = 64 * 2**20


class PageCache:
    """Rendered transaction pages (the encoded ``transactions`` array), bounded in bytes.

    A page is a pure function of (account, transaction count, bank clock, date window, offset,
    limit), which is the key, so a hit is always what the generator would produce; rendering costs
    ~6 us per transaction, so repeated reads of the same pages (benchmarks, reruns) are served at
    the speed of the HTTP stack instead of the generator's.
    """

    def __init__(self, max_bytes: int = PAGE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._pages: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes | None:
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def put(self, key: Hashable, page: bytes) -> None:
        if len(page) > self.max_bytes:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._pages[key] = page
        self.size += len(page)
        while self.size > self.max_bytes:
            _, dropped = self._pages.popitem(last=False)
            self.size -= len(dropped)


@router.get("/accounts")
async def accounts(request: Request, sb: SandboxDep) -> Response:
    q = request.query_params
    result_type = q.get("resultType") or "lightweight"
    if result_type not in ("lightweight", "details"):
        return fdx_error(
            400, "401", "Invalid input", f"resultType must be lightweight or details: {result_type!r}"
        )
    at = customer_token(sb, request, "ACCOUNT_BASIC" if result_type == "lightweight" else "ACCOUNT_DETAILED")
    selected = customer_of(sb, at).accounts
    if q.get("accountIds") and not sb.knobs.strict_fdx53:  # not an FDX 5.3 parameter
        wanted = {sb.unalias(x.strip()) for x in q["accountIds"].split(",") if x.strip()}
        selected = [a for a in selected if a.account_id in wanted]
        if not selected:
            return fdx_error(404, "701", "Account not found", "none of accountIds belongs to this customer")
    offset, limit = paging(sb, request)
    doc = page_doc(request, offset, limit, len(selected))
    # FDX 5.3 has holdings only on /accounts/{accountId}
    holdings = "INVESTMENTS" in at.scopes and not sb.knobs.strict_fdx53
    as_of = balance_as_of(sb)
    doc["accounts"] = [
        {a.wrapper: a.lightweight() if result_type == "lightweight" else a.full(as_of, holdings=holdings)}
        for a in selected[offset : offset + limit]
    ]
    return json_response(doc)


@router.get("/accounts/{accountId}")
async def account(request: Request, sb: SandboxDep) -> Response:
    at = customer_token(sb, request, "ACCOUNT_DETAILED")
    acct = own_account(sb, at, request.path_params["accountId"])
    return json_response({acct.wrapper: acct.full(balance_as_of(sb), holdings="INVESTMENTS" in at.scopes)})


@router.get("/accounts/{accountId}/transactions")
async def transactions(request: Request, sb: SandboxDep) -> Response:
    at = customer_token(sb, request, "TRANSACTIONS")
    acct = own_account(sb, at, request.path_params["accountId"])
    start, end = date_window(sb, request)
    offset, limit = paging(sb, request)
    count = sb.transactions_for(acct.account_id)
    window = sb.bank.series(acct, count).window(sb.now, start, end)
    if window.total == 0 and sb.knobs.empty_as_1107:
        return empty_1107()
    doc = page_doc(request, offset, limit, window.total)
    key = (acct.account_id, count, sb.now, start, end, offset, limit)
    items = request.app.state.page_cache.get(key)
    if items is None:
        wrapper = acct.txn_wrapper
        items = dumps([{wrapper: rec} for rec in window.slice(offset, limit)])
        request.app.state.page_cache.put(key, items)
    return json_response_with_items(doc, "transactions", items)


@router.get("/accounts/{accountId}/statements")
async def statements(request: Request, sb: SandboxDep) -> Response:
    at = customer_token(sb, request, "STATEMENTS")
    acct = own_account(sb, at, request.path_params["accountId"])
    start, end = date_window(sb, request)
    offset, limit = paging(sb, request)
    found = sb.bank.statements(acct, sb.now)
    if start is not None:
        found = [s for s in found if date_to_epoch(s.statement_date) >= start]
    if end is not None:
        found = [s for s in found if date_to_epoch(s.statement_date) <= end]
    if not found and sb.knobs.empty_as_1107:
        return empty_1107()
    doc = page_doc(request, offset, limit, len(found))
    doc["statements"] = [sb.bank.statement_json(s, FDX) for s in found[offset : offset + limit]]
    return json_response(doc)


def statement_pdf(sb: Sandbox, acct: Account, statement_id: str) -> tuple[bytes, str] | None:
    st = next((s for s in sb.bank.statements(acct, sb.now) if s.statement_id == statement_id), None)
    if st is None:
        return None
    customer = sb.bank.customer_by_id[acct.customer_id]
    series = sb.bank.series(acct, sb.transactions_for(acct.account_id))
    count = series.window(sb.now, date_to_epoch(st.period_start), date_to_epoch(st.statement_date) + DAY - 1)
    lines = [
        "Sandbox Bank - Account Statement",
        f"Statement period: {st.month_name} ({st.period_start.isoformat()} to {st.statement_date.isoformat()})",
        f"Account: {acct.product_name} {acct.display}",
        f"Account holder: {customer.first} {customer.last} ({customer.customer_id})",
        f"Currency: {acct.currency}",
        f"Transactions posted in the period: {count.hi - count.lo}",
        f"Statement ID: {st.statement_id}",
        "Generated by the Flinks Open Banking sandbox. Not a real bank document.",
    ]
    return build_pdf(lines, title=f"{acct.display} {st.month_name}"), st.statement_id


def file_signature(sb: Sandbox, account_id: str, statement_id: str) -> str:
    msg = f"{account_id}/{statement_id}".encode()
    return hmac.new(sb.file_secret, msg, hashlib.sha256).hexdigest()[:32]


def accepts_pdf(accept: str) -> bool:
    if not accept.strip():
        return True
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("application/pdf", "application/*", "*/*"):
            return True
    return False


@router.get("/accounts/{accountId}/statements/{statementId}")
async def statement(request: Request, sb: SandboxDep) -> Response:
    at = customer_token(sb, request, "STATEMENTS")
    acct = own_account(sb, at, request.path_params["accountId"])
    statement_id = request.path_params["statementId"]
    if not any(s.statement_id == statement_id for s in sb.bank.statements(acct, sb.now)):
        return fdx_error(
            404, "1107", "Statement not found", f"No statement {statement_id!r} for this account"
        )
    if not accepts_pdf(request.headers.get("accept", "")):
        return fdx_error(
            406, "1203", "Content type not supported", "Statements are available as application/pdf"
        )
    if sb.knobs.statement_processing > 0:
        sb.knobs.statement_processing -= 1
        return fdx_error(
            400, "1300", "Statement is still being processed", "retry later", {"Retry-After": "1"}
        )
    if sb.knobs.statement_redirect:
        sig = file_signature(sb, acct.account_id, statement_id)
        location = (
            f"{str(request.base_url).rstrip('/')}/_files/statements/{acct.account_id}/{statement_id}.pdf"
        )
        return RedirectResponse(f"{location}?sig={sig}", status_code=302)
    rendered = statement_pdf(sb, acct, statement_id)
    assert rendered is not None
    pdf, sid = rendered
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{sid}.pdf"'},
    )


@files.get("/statements/{accountId}/{file}")
async def statement_file(request: Request, sb: SandboxDep) -> Response:
    account_id = request.path_params["accountId"]
    statement_id = request.path_params["file"].removesuffix(".pdf")
    acct = sb.bank.account_by_id.get(account_id)
    sig = request.query_params.get("sig", "")
    if acct is None or not hmac.compare_digest(sig, file_signature(sb, account_id, statement_id)):
        return Response(b"<Error><Code>AccessDenied</Code></Error>", 403, media_type="application/xml")
    rendered = statement_pdf(sb, acct, statement_id)
    if rendered is None:
        return Response(b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml")
    return Response(rendered[0], media_type="application/pdf")


@router.get("/accounts/{accountId}/contact")
async def contact(request: Request, sb: SandboxDep) -> Response:
    at = customer_token(sb, request, "CUSTOMER_CONTACT")
    acct = own_account(sb, at, request.path_params["accountId"])
    return json_response(acct.contact(sb.bank.customer_by_id[acct.customer_id]))


@router.get("/accounts/{accountId}/payment-networks")
async def payment_networks(request: Request, sb: SandboxDep) -> Response:
    at = customer_token(sb, request, "ACCOUNT_PAYMENTS")
    acct = own_account(sb, at, request.path_params["accountId"])
    networks = acct.payment_networks()
    if not networks:
        return fdx_error(
            422, "704", "Account type not supported", f"{acct.account_type} has no payment networks"
        )
    offset, limit = paging(sb, request)
    doc = page_doc(request, offset, limit, len(networks))
    doc["paymentNetworks"] = networks[offset : offset + limit]
    return json_response(doc)


@router.get("/customers/current")
async def customer_current(request: Request, sb: SandboxDep) -> Response:
    at = customer_token(sb, request, "CUSTOMER_PERSONAL")
    customer = customer_of(sb, at)
    doc: dict[str, Any] = {
        "customerId": customer.customer_id,
        "type": "CONSUMER",
        "name": customer.name(),
    }
    if "CUSTOMER_CONTACT" in at.scopes:
        doc["email"] = [customer.email]
        doc["addresses"] = [dict(customer.address)]
        doc["telephones"] = [dict(t) for t in customer.telephones]
    doc["accounts"] = [{"accountId": a.account_id, "relationship": "PRIMARY"} for a in customer.accounts]
    return json_response(doc)
