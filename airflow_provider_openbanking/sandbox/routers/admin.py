"""Admin and test hooks under ``/_admin`` (no auth; the middleware allows loopback clients only),
and the service index at ``/``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..data import DAY, date_to_epoch, iso_ts
from ..dependencies import SandboxDep, balance_as_of, json_body, parse_day
from ..responses import FDX, Denied, json_response
from ..state import KnobError, new_counters, normalize_scopes

router = APIRouter(prefix="/_admin", tags=["admin"])
index = APIRouter(tags=["index"])


@index.get("/")
async def root(sb: SandboxDep) -> Response:
    return json_response(
        {
            "name": "Flinks Open Banking sandbox (FDX 5)",
            "token": "/api/v1/token",
            "authorize": "/api/v1/authorize",
            "fdx": FDX,
            "admin": "/_admin/config",
        }
    )


@router.get("/config")
async def get_config(sb: SandboxDep) -> Response:
    return json_response(sb.knobs.as_json())


@router.post("/config")
async def set_config(request: Request, sb: SandboxDep) -> Response:
    changes = await json_body(request)
    if not isinstance(changes, dict):
        raise KnobError("body must be a JSON object of knobs")
    sb.knobs.update(changes, sb.bank)
    return json_response(sb.knobs.as_json())


@router.get("/faults")
async def get_faults(sb: SandboxDep) -> Response:
    return json_response({"faults": sb.faults})


@router.post("/faults")
async def add_faults(request: Request, sb: SandboxDep) -> Response:
    specs = await json_body(request)
    sb.add_faults(specs if isinstance(specs, list) else [specs])
    return json_response({"faults": sb.faults})


@router.delete("/faults")
async def clear_faults(sb: SandboxDep) -> Response:
    sb.faults.clear()
    return json_response({"faults": []})


@router.get("/counters")
async def counters(sb: SandboxDep) -> Response:
    return json_response(sb.counters)


@router.delete("/counters")
async def clear_counters(sb: SandboxDep) -> Response:
    sb.counters = new_counters()
    return json_response(sb.counters)


@router.post("/reset")
async def reset(sb: SandboxDep) -> Response:
    sb.reset()
    return json_response({"status": "reset"})


@router.get("/issued")
async def issued(sb: SandboxDep) -> Response:
    return json_response({kind: list(values) for kind, values in sb.issued.items()})


@router.post("/tokens/expire")
async def expire_tokens(request: Request, sb: SandboxDep) -> Response:
    raw = request.query_params.get("older_than")
    try:
        older_than = float(raw) if raw else 0.0
    except ValueError:
        raise KnobError(f"older_than: expected seconds, got {raw!r}") from None
    cutoff = time.monotonic() - older_than
    customer = request.query_params.get("customer_id")
    expired = [
        at
        for at in sb.access_tokens.values()
        if at.issued_at <= cutoff
        and (not customer or (at.consent is not None and at.consent.customer_id == customer))
    ]
    for at in expired:
        at.expires_at = 0.0
    return json_response({"expired": len(expired)})


@router.post("/clients")
async def register_client(request: Request, sb: SandboxDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise KnobError("body must be an object")
    client = sb.register_client(
        str(body.get("client_id") or ""),
        str(body.get("client_secret") or ""),
        body.get("redirect_uris") or [],
    )
    return json_response({"client_id": client.client_id, "redirect_uris": client.redirect_uris}, 201)


@router.get("/consents")
async def list_consents(sb: SandboxDep) -> Response:
    return json_response(
        [
            {
                "consent_id": c.consent_id,
                "client_id": c.client_id,
                "customer_id": c.customer_id,
                "scopes": list(c.scopes),
                "revoked": c.revoked,
                "bank_revoked": c.bank_revoked,
                "last_used": iso_ts(c.last_used),
            }
            for c in sb.consents.values()
        ]
    )


@router.post("/consents")
async def grant_consent(request: Request, sb: SandboxDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise KnobError("body must be an object")
    customer_id = body.get("customer_id") or sb.knobs.consent_customer_id or sb.bank.customers[0].customer_id
    scopes = normalize_scopes(body.get("scopes"))
    consent = sb.create_consent(
        str(body.get("client_id") or "demo-client"),
        str(customer_id),
        scopes,
        idle_days=body.get("idle_days") or 0,
    )
    return json_response(
        {
            "refresh_token": consent.refresh_token,
            "customer_id": consent.customer_id,
            "client_id": consent.client_id,
            "scopes": list(consent.scopes),
            "consent_id": consent.consent_id,
        }
    )


@router.post("/consents/bulk")
async def grant_consents_bulk(request: Request, sb: SandboxDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise KnobError("body must be an object")
    consents = sb.create_consents_bulk(body.get("count"), body.get("scopes"), body.get("client_id"))
    return json_response(
        {
            "consents": [
                {
                    "consent_id": c.customer_id,
                    "customer_id": c.customer_id,
                    "refresh_token": c.refresh_token,
                }
                for c in consents
            ]
        }
    )


@router.post("/consents/revoke")
async def revoke_consent(request: Request, sb: SandboxDep) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise KnobError("body must be an object")
    count = sb.revoke_where(
        customer_id=body.get("customer_id"),
        refresh_token=body.get("refresh_token"),
        at_bank=bool(body.get("at_bank")),
    )
    return json_response({"revoked": count})


@router.get("/customers")
async def list_customers(request: Request, sb: SandboxDep) -> Response:
    """Customers in order; ``offset`` / ``limit`` select a slice (a bank of 50,000 builds each one)."""
    q = request.query_params
    try:
        offset = int(q.get("offset") or 0)
        limit = int(q["limit"]) if q.get("limit") else len(sb.bank.customers)
    except ValueError:
        raise KnobError("offset and limit must be whole numbers") from None
    if offset < 0 or limit < 0:
        raise KnobError("offset and limit must be >= 0")
    return json_response(
        [
            {
                "customerId": c.customer_id,
                "name": c.name(),
                "accounts": [
                    {"accountId": a.account_id, "accountType": a.account_type, "kind": a.kind}
                    for a in c.accounts
                ],
            }
            for c in sb.bank.customers[offset : offset + limit]
        ]
    )


@router.get("/truth/accounts")
async def truth_accounts(request: Request, sb: SandboxDep) -> Response:
    customer_id = request.query_params.get("customer_id")
    if customer_id:
        if customer_id not in sb.bank.customer_by_id:
            return json_response({"error": f"unknown customer {customer_id!r}"}, 404)
        selected = sb.bank.customer_by_id[customer_id].accounts
    else:
        selected = [a for c in sb.bank.customers for a in c.accounts]
    as_of = balance_as_of(sb)
    return json_response([a.full(as_of, holdings=True) for a in selected])


@router.get("/truth/transactions")
async def truth_transactions(request: Request, sb: SandboxDep) -> Response:
    q = request.query_params
    acct = sb.bank.account_by_id.get(sb.unalias(q.get("account_id", "")))
    if acct is None:
        return json_response({"error": f"unknown account {q.get('account_id')!r}"}, 404)
    try:
        start = parse_day(q.get("start") or None, "start")
        end = parse_day(q.get("end") or None, "end")
    except Denied:
        return json_response({"error": "start/end must be YYYY-MM-DD"}, 400)
    window = sb.bank.series(acct, sb.transactions_for(acct.account_id)).window(
        sb.now,
        date_to_epoch(start) if start else None,
        date_to_epoch(end) + DAY - 1 if end else None,
    )
    return json_response(list(window.slice(0, window.total)))
