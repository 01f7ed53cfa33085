"""Flinks OAuth endpoints under ``/api/v1``: token, providers, authorize (and its consent page),
revoke."""

from __future__ import annotations

import base64
import binascii
import html
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlparse

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..data import Customer
from ..dependencies import SandboxDep, bearer, rate_limited
from ..responses import fdx_error, json_response
from ..state import (
    GRANT_TYPES,
    PROVIDERS,
    KnobError,
    OAuthError,
    PendingAuthorization,
    Sandbox,
    normalize_scopes,
)

router = APIRouter(prefix="/api/v1", tags=["oauth"])

#: Customers listed in the consent page's picker (``login_hint`` reaches any other one).
PICKER_CUSTOMERS = 50
SCOPE_LABELS = {
    "ACCOUNT_BASIC": "Basic account information (names, types, masked numbers)",
    "ACCOUNT_DETAILED": "Account details and balances, full account numbers",
    "ACCOUNT_PAYMENTS": "Payment network details (transit and account numbers)",
    "INVESTMENTS": "Investment holdings",
    "TRANSACTIONS": "Transaction history",
    "STATEMENTS": "Account statements",
    "CUSTOMER_CONTACT": "Contact details (email, phone, address)",
    "CUSTOMER_PERSONAL": "Personal information (name)",
}


async def token_params(request: Request) -> dict[str, str]:
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.endswith("json") or (not ctype and raw.lstrip().startswith(b"{")):
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise OAuthError(400, "invalid_request", "Malformed JSON body") from None
        if not isinstance(data, dict):
            raise OAuthError(400, "invalid_request", "The JSON body must be an object")
        return {str(k): str(v) for k, v in data.items() if v is not None}
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def basic_auth(request: Request) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(401, "invalid_client", "Malformed HTTP Basic credentials") from None
    cid, _, secret = decoded.partition(":")
    return unquote_plus(cid), unquote_plus(secret)


@router.post("/token")
async def token(request: Request, sb: SandboxDep) -> Response:
    try:
        params = await token_params(request)
        basic = basic_auth(request)
        if basic is not None:
            client_id, client_secret = basic
            if params.get("client_id") and params["client_id"] != client_id:
                raise OAuthError(400, "invalid_request", "client_id differs from the Basic credentials")
        else:
            client_id, client_secret = params.get("client_id", ""), params.get("client_secret", "")
            wait = sb.rate_limit(client_id) if client_id in sb.clients else None
            if wait is not None:
                return rate_limited(sb, wait)
        grant = params.get("grant_type")
        if not grant:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        if grant not in GRANT_TYPES:
            raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type {grant!r}")
        client = sb.authenticate_client(client_id, client_secret)
        ttl = int(sb.knobs.access_token_ttl)
        body: dict[str, Any]
        if grant == "client_credentials":
            access = sb.issue_access_token(client.client_id, None, ())
            body = {"access_token": access, "token_type": "Bearer", "expires_in": ttl}
            if params.get("scope"):
                body["scope"] = params["scope"]
        elif grant == "authorization_code":
            if not params.get("code"):
                raise OAuthError(400, "invalid_request", "code is required")
            if not params.get("redirect_uri"):
                raise OAuthError(400, "invalid_request", "redirect_uri is required")
            consent = sb.redeem_code(client, params["code"], params["redirect_uri"])
            access = sb.issue_access_token(client.client_id, consent, consent.scopes)
            body = {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": ttl,
                "refresh_token": consent.refresh_token,
                "scope": " ".join(consent.scopes),
            }
        else:
            if not params.get("refresh_token"):
                raise OAuthError(400, "invalid_request", "refresh_token is required")
            consent, new_refresh = sb.refresh(client, params["refresh_token"])
            access = sb.issue_access_token(client.client_id, consent, consent.scopes)
            body = {"access_token": access, "token_type": "Bearer", "expires_in": ttl}
            if new_refresh is not None:
                body["refresh_token"] = new_refresh
            body["scope"] = " ".join(consent.scopes)
        sb.counters["token_grants"][grant] += 1
        return json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
    except OAuthError as err:
        if err.error == "invalid_grant":
            sb.counters["invalid_grant"] += 1
        headers = {"Cache-Control": "no-store"}
        if err.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="openbanking-sandbox"'
        return json_response({"error": err.error, "error_description": err.description}, err.status, headers)


@router.get("/providers")
async def providers(request: Request, sb: SandboxDep) -> Response:
    bearer(sb, request)
    return json_response([dict(p) for p in PROVIDERS])


def with_query(uri: str, params: dict[str, str | None]) -> str:
    clean = {k: v for k, v in params.items() if v is not None}
    return uri + ("&" if urlparse(uri).query else "?") + urlencode(clean)


def authorize_error_page(request: Request, error: str, description: str) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return json_response({"error": error, "error_description": description}, 400)
    page = (
        "<!doctype html><html><head><title>Authorization error</title></head><body>"
        f"<h1>Authorization error</h1><p><b>{html.escape(error)}</b>: {html.escape(description)}</p>"
        "</body></html>"
    )
    return HTMLResponse(page, status_code=400)


def redirect(uri: str, params: dict[str, str | None]) -> Response:
    return RedirectResponse(with_query(uri, params), status_code=302)


def approve(sb: Sandbox, pending: PendingAuthorization) -> Response:
    code = sb.new_code(pending.client_id, pending.redirect_uri, pending.customer_id, pending.scopes)
    return redirect(pending.redirect_uri, {"code": code, "state": pending.state})


def deny(redirect_uri: str, state: str | None) -> Response:
    params = {"error": "access_denied", "error_description": "The user denied the access", "state": state}
    return redirect(redirect_uri, params)


def picker_customers(sb: Sandbox, selected: str) -> list[Customer]:
    """The first customers (a bank of 100,000 would make a page nobody can use), plus the selected one."""
    shown = list(sb.bank.customers[:PICKER_CUSTOMERS])
    if all(c.customer_id != selected for c in shown) and selected in sb.bank.customer_by_id:
        shown.append(sb.bank.customer_by_id[selected])
    return shown


def consent_page(
    sb: Sandbox, request_id: str, pending: PendingAuthorization, provider_id: str | None
) -> Response:
    provider = next((p["name"] for p in PROVIDERS if p["id"] == provider_id), PROVIDERS[0]["name"])
    options = "".join(
        f'<option value="{c.customer_id}"{" selected" if c.customer_id == pending.customer_id else ""}>'
        f"{html.escape(c.first)} {html.escape(c.last)} ({c.customer_id})</option>"
        for c in picker_customers(sb, pending.customer_id)
    )
    scopes = "".join(f"<li><code>{s}</code> - {html.escape(SCOPE_LABELS[s])}</li>" for s in pending.scopes)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(provider)} - consent</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>{html.escape(provider)}</h1>
<p>The application <b>{html.escape(pending.client_id)}</b> asks to access your data:</p>
<ul>{scopes}</ul>
<form method="post" action="/api/v1/authorize/decision">
  <input type="hidden" name="request_id" value="{request_id}">
  <label>Signed in as <select name="customer_id">{options}</select></label>
  <p><button type="submit" name="decision" value="approve">Approve</button>
 <button type="submit" name="decision" value="deny">Deny</button></p>
</form>
</body></html>"""
    return HTMLResponse(page)


@router.get("/authorize")
async def authorize(request: Request, sb: SandboxDep) -> Response:
    q = request.query_params
    client = sb.clients.get(q.get("client_id", ""))
    if client is None:
        return authorize_error_page(request, "invalid_client", "Unknown client_id")
    redirect_uri = q.get("redirect_uri", "")
    if not redirect_uri or not client.accepts_redirect(redirect_uri):
        return authorize_error_page(
            request, "invalid_request", "redirect_uri is not registered for this client"
        )
    state = q.get("state")
    if q.get("response_type") != "code":
        return redirect(
            redirect_uri,
            {
                "error": "unsupported_response_type",
                "error_description": "response_type must be code",
                "state": state,
            },
        )
    try:
        scopes = normalize_scopes(q.get("scope", ""))
    except KnobError as exc:
        return redirect(
            redirect_uri, {"error": "invalid_scope", "error_description": str(exc), "state": state}
        )
    provider_id = q.get("provider_id")
    if provider_id and provider_id not in {p["id"] for p in PROVIDERS}:
        return redirect(
            redirect_uri,
            {"error": "invalid_request", "error_description": "Unknown provider_id", "state": state},
        )
    customer_id = q.get("login_hint") or sb.knobs.consent_customer_id or sb.bank.customers[0].customer_id
    if customer_id not in sb.bank.customer_by_id:
        return redirect(
            redirect_uri,
            {"error": "invalid_request", "error_description": "Unknown login_hint", "state": state},
        )
    pending = PendingAuthorization(
        client.client_id, redirect_uri, scopes, state, customer_id, time.monotonic() + 600
    )
    mode = sb.knobs.consent_mode
    if mode == "deny":
        return deny(redirect_uri, state)
    if mode == "prompt":
        request_id = secrets.token_urlsafe(16)
        sb.pending_auth[request_id] = pending
        return consent_page(sb, request_id, pending, provider_id)
    return approve(sb, pending)


@router.post("/authorize/decision")
async def authorize_decision(request: Request, sb: SandboxDep) -> Response:
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    pending = sb.pending_auth.pop(form.get("request_id", ""), None)
    if pending is None or pending.expires_at <= time.monotonic():
        return authorize_error_page(request, "invalid_request", "Unknown or expired authorization request")
    if form.get("customer_id"):
        if form["customer_id"] not in sb.bank.customer_by_id:
            return authorize_error_page(request, "invalid_request", "Unknown customer")
        pending.customer_id = form["customer_id"]
    if form.get("decision") == "approve":
        return approve(sb, pending)
    return deny(pending.redirect_uri, pending.state)


@router.delete("/revoke")
async def revoke(request: Request, sb: SandboxDep) -> Response:
    at = bearer(sb, request)
    if at.consent is None:
        return fdx_error(401, "401", "A customer access token is required", "client-credentials token used")
    sb.revoke(at.consent)
    return Response(status_code=204)
