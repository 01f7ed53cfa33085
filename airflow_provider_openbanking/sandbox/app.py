"""The FastAPI application: Flinks OAuth endpoints, FDX 5 data endpoints, admin hooks.

Data endpoints build their JSON bytes directly (no response models). A pure-ASGI middleware
adds ``ob-correlation-id`` / ``ob-trace-id`` to every response, counts requests, applies latency
and injects faults.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import html
import json
import logging
import math
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlparse

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .data import DAY, Account, Customer, date_to_epoch, iso_ts
from .pdf import build_pdf
from .state import (
    GRANT_TYPES,
    PROVIDERS,
    AccessToken,
    KnobError,
    OAuthError,
    PendingAuthorization,
    Sandbox,
    new_counters,
    normalize_scopes,
)

log = logging.getLogger("airflow_provider_openbanking.sandbox")

FDX = "/api/fdx/5"
MAX_LIMIT = 1000
#: Customers listed in the consent page's picker (``login_hint`` reaches any other one).
PICKER_CUSTOMERS = 50
LOOPBACK = ("127.0.0.1", "::1", "localhost", "testclient")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
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

# ---- JSON encoding ---------------------------------------------------------------------------

dumps: Callable[[Any], bytes]
try:  # pragma: no cover - depends on the environment
    import orjson

    dumps = orjson.dumps
except ImportError:  # pragma: no cover
    try:
        import msgspec

        dumps = msgspec.json.Encoder().encode
    except ImportError:

        def _json_dumps(obj: Any) -> bytes:
            return json.dumps(obj, separators=(",", ":")).encode()

        dumps = _json_dumps


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json", headers=headers)


def fdx_error(
    status: int, code: str, message: str, debug: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = {"code": code, "message": message, "debugMessage": debug or message}
    return json_response(body, status, headers)


def invalid_token(debug: str) -> Response:
    return fdx_error(
        401,
        "401",
        "The access token is invalid or expired",
        debug,
        {"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def json_response_with_items(doc: dict[str, Any], key: str, items: bytes) -> Response:
    """``doc`` plus ``key`` holding ``items`` (an already encoded JSON array), as the last member."""
    head = dumps(doc)[:-1]  # without the closing brace
    sep = b"," if len(head) > 1 else b""
    body = b"".join((head, sep, dumps(key), b":", items, b"}"))
    return Response(body, media_type="application/json")


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


class Denied(Exception):
    """Raised by helpers to short-circuit a handler with a ready error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


# ---- offsets and routes ----------------------------------------------------------------------


def encode_offset(index: int) -> str:
    return base64.urlsafe_b64encode(f"i{index}".encode()).rstrip(b"=").decode()


def decode_offset(value: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(value) from exc
    if not raw.startswith("i") or not raw[1:].isdigit():
        raise ValueError(value)
    return int(raw[1:])


ROUTE_TEMPLATES = (
    "/api/v1/token",
    "/api/v1/providers",
    "/api/v1/authorize",
    "/api/v1/authorize/decision",
    "/api/v1/revoke",
    f"{FDX}/accounts",
    f"{FDX}/accounts/{{accountId}}",
    f"{FDX}/accounts/{{accountId}}/transactions",
    f"{FDX}/accounts/{{accountId}}/statements",
    f"{FDX}/accounts/{{accountId}}/statements/{{statementId}}",
    f"{FDX}/accounts/{{accountId}}/contact",
    f"{FDX}/accounts/{{accountId}}/payment-networks",
    f"{FDX}/customers/current",
    "/_files/statements/{accountId}/{file}",
)
_TEMPLATE_RES = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "/?$"), t) for t in ROUTE_TEMPLATES]
PAGINATED = frozenset(
    {
        f"{FDX}/accounts",
        f"{FDX}/accounts/{{accountId}}/transactions",
        f"{FDX}/accounts/{{accountId}}/statements",
        f"{FDX}/accounts/{{accountId}}/payment-networks",
    }
)


def route_template(path: str) -> str | None:
    for regex, template in _TEMPLATE_RES:
        if regex.match(path):
            return template
    return None


# ---- middleware ------------------------------------------------------------------------------

_DROP_BODY = b'{"page": {"totalElements": 1000}, "transactions": [{"depositTransaction": {"accountId": "acc-'
_MALFORMED_BODY = (
    b'{"page": {"nextOffset": "aTEwMA"}, "transactions": [{"depositTransaction": {"amount": 12.5,,]}'
)
_HTML_BODY = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _has_offset(scope: Scope) -> bool:
    query = scope.get("query_string", b"").decode("latin-1")
    return any(k == "offset" and v for k, v in parse_qsl(query))


#: Faults that alter the real response instead of replacing it.
ALTERING_FAULTS = frozenset({"repeat_offset", "corrupt", "oversized"})


def _unalias_path(scope: Scope, sb: Sandbox) -> Scope:
    """Route a request for an aliased (served) id to the real one.

    Segments are compared percent-decoded one by one on the *raw* path, so a served id holding
    ``/`` or ``..`` arrives as one (encoded) segment; any other path is left untouched.
    """
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    segments = raw.split(b"/")
    changed = False
    for i, segment in enumerate(segments):
        if not segment:
            continue
        real = sb.unalias(unquote(segment.decode("latin-1")))
        if real != unquote(segment.decode("latin-1")):
            segments[i] = quote(real, safe="").encode()
            changed = True
    if not changed:
        return scope
    new_raw = b"/".join(segments)
    return {**scope, "raw_path": new_raw, "path": unquote(new_raw.decode("latin-1"))}


def _client_of(scope: Scope, sb: Sandbox) -> str | None:
    """The OAuth client a request comes from: its bearer token's client, or its HTTP Basic
    client id (the token endpoint's body credentials are rate-limited by the handler)."""
    for name, value in scope.get("headers", []):
        if name != b"authorization":
            continue
        auth = value.decode("latin-1")
        if auth[:7].lower() == "bearer ":
            at = sb.access_tokens.get(auth[7:].strip())
            return at.client_id if at is not None else None
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return unquote_plus(decoded.partition(":")[0]) or None
        return None
    return None


def _is_json(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if name.lower() == b"content-type":
            return b"json" in value.lower()
    return False


def _alias_body(body: bytes, aliases: dict[str, str]) -> bytes:
    """Replace every JSON string equal to a real id by its alias (exact values only)."""
    for real, served in aliases.items():
        body = body.replace(json.dumps(real).encode(), json.dumps(served).encode())
    return body


def _corrupt(body: bytes, fault: dict[str, Any]) -> bytes:
    """The first record of the response's list (or the object itself) with ``fault["set"]``
    fields overwritten, or replaced by ``fault["record"]``: wrong types from a buggy server."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if not isinstance(doc, dict):
        return body
    items = next(
        (v for k, v in doc.items() if k not in ("page", "links") and isinstance(v, list) and v), None
    )
    if "record" in fault:
        if items is None:
            return dumps(fault["record"])
        items[0] = fault["record"]
        return dumps(doc)
    target: Any = items[0] if items is not None else doc
    if isinstance(target, dict) and len(target) == 1 and isinstance(next(iter(target.values())), dict):
        target = next(iter(target.values()))  # the FDX 5 type wrapper
    if isinstance(target, dict):
        target.update(fault.get("set") or {})
    return dumps(doc)


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


class SandboxMiddleware:
    """Correlation headers, counters, latency, fault injection, loopback-only admin."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sb = sandbox
        logging.getLogger("uvicorn.error").addFilter(_DropFilter())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sb = self.sb
        aliased = bool(sb.knobs.id_aliases)
        if aliased and scope["path"].startswith(("/api/", "/_files/")):
            scope = _unalias_path(scope, sb)
        path: str = scope["path"]
        method: str = scope["method"]
        interaction = ""
        for name, value in scope.get("headers", []):
            if name == b"x-fapi-interaction-id":
                interaction = value.decode("latin-1").strip()
                break
        correlation = interaction or str(uuid.uuid4())
        extra = [
            (b"ob-correlation-id", correlation.encode("latin-1")),
            (b"ob-trace-id", uuid.uuid4().hex.encode()),
        ]
        if interaction:
            extra.append((b"x-fapi-interaction-id", interaction.encode("latin-1")))
        tracked = path.startswith(("/api/", "/_files/"))
        if path.startswith("/_admin"):
            client = scope.get("client")
            if not client or client[0] not in LOOPBACK:
                await self._send(send, 403, b'{"error": "admin endpoints are loopback-only"}', extra)
                return
        fault: dict[str, Any] | None = None
        template = None
        if tracked:
            template = route_template(path)
            sb.count_request(f"{method} {template or path}")
            if sb.knobs.latency_ms > 0:
                await asyncio.sleep(sb.knobs.latency_ms / 1000)
            if path.startswith("/api/") and sb.knobs.rate_limit_rps > 0:
                client_id = _client_of(scope, sb)
                wait = sb.rate_limit(client_id) if client_id is not None else None
                if wait is not None:
                    await self._send_rate_limited(send, extra, wait)
                    return
            if path.startswith("/api/"):
                # a pagination loop needs a request offset to repeat: only requests carrying one qualify
                has_offset = _has_offset(scope)
                loopable = method == "GET" and template in PAGINATED and has_offset
                fault = sb.take_fault(method, path, loopable, has_offset)
                if fault is not None and fault["kind"] not in ALTERING_FAULTS:
                    await self._fault(fault, send, extra)
                    return

        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *extra]
                if tracked:
                    sb.count_status(message["status"])
            await send(message)

        try:
            if fault is not None:
                await self._alter(fault, scope, receive, send_wrapper)
            elif aliased and path.startswith(("/api/", "/_admin/truth/", "/_admin/customers")):
                await self._alter(None, scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            if started:
                raise
            body = dumps(
                {"code": "500", "message": "Internal server error", "debugMessage": "see sandbox log"}
            )
            await send_wrapper(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send_wrapper({"type": "http.response.body", "body": body})

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        extra: list[tuple[bytes, bytes]],
        ctype: bytes = b"application/json",
    ) -> None:
        headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body)), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_rate_limited(self, send: Send, extra: list[tuple[bytes, bytes]], wait: float) -> None:
        body = dumps(
            {
                "code": "1207",
                "message": "Too many requests",
                "debugMessage": f"over the rate limit of {self.sb.knobs.rate_limit_rps:g} requests/s for this client",
            }
        )
        self.sb.count_status(429)
        retry_after = str(max(1, math.ceil(wait))).encode()
        await self._send(send, 429, body, [*extra, (b"retry-after", retry_after)])

    async def _fault(self, fault: dict[str, Any], send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        kind = fault["kind"]
        sb = self.sb
        if kind == "status":
            status = fault["status"]
            code = str(fault.get("code") or ("1207" if status in (422, 429) else status))
            message = fault.get("message") or {
                429: "Too many requests",
                422: "Too many requests",
                500: "Internal server error",
                502: "Bad gateway",
                503: "Service unavailable: scheduled maintenance",
            }.get(status, "Injected error")
            body = dumps({"code": code, "message": message, "debugMessage": "fault injected by the sandbox"})
            headers = list(extra)
            if fault.get("retry_after") is not None:
                ra = fault["retry_after"]
                headers.append((b"retry-after", str(int(ra) if float(ra).is_integer() else ra).encode()))
            sb.count_status(status)
            await self._send(send, status, body, headers)
        elif kind == "drop":
            sb.count_status(200)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % (len(_DROP_BODY) * 50)),
                *extra,
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": _DROP_BODY, "more_body": True})
            # returning without completing the response makes uvicorn close the connection
        elif kind == "malformed":
            sb.count_status(200)
            await self._send(send, 200, _MALFORMED_BODY, extra)
        elif kind == "html":
            status = fault.get("status", 502)
            sb.count_status(status)
            body = _HTML_BODY.replace("{status}", str(status)).encode()
            await self._send(send, status, body, extra, b"text/html")

    async def _alter(self, fault: dict[str, Any] | None, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the real response, altered by ``fault`` (``repeat_offset``, ``corrupt``,
        ``oversized``) and with real ids replaced by their aliases (knob ``id_aliases``)."""
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, capture)
        start = messages[0]
        body = b"".join(m.get("body", b"") for m in messages[1:])
        kind = fault["kind"] if fault else None
        if self.sb.knobs.id_aliases and _is_json(start):
            body = _alias_body(body, self.sb.knobs.id_aliases)
        if kind == "corrupt" and start["status"] == 200:
            body = _corrupt(body, fault or {})
        if kind == "oversized":
            await self._oversized(start, body, fault or {}, send)
            return
        if kind == "repeat_offset" and start["status"] == 200:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
                offset = next((v for k, v in query if k == "offset"), "") or encode_offset(0)
                doc.setdefault("page", {})["nextOffset"] = offset
                kept = [(k, v) for k, v in query if k != "offset"]
                href = scope["path"] + "?" + urlencode([*kept, ("offset", offset)])
                links: dict[str, Any] = doc["links"] if isinstance(doc.get("links"), dict) else {}
                links["next"] = {"href": href}
                doc["links"] = links
                body = dumps(doc)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", b"%d" % len(body)))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _oversized(self, start: Message, body: bytes, fault: dict[str, Any], send: Send) -> None:
        """The real response followed by ``fault["bytes"]`` of JSON whitespace (still a valid
        document), with a ``Content-Length`` or, with ``chunked``, streamed without one."""
        padding = int(fault.get("bytes") or 0)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        chunked = bool(fault.get("chunked"))
        if not chunked:
            headers.append((b"content-length", b"%d" % (len(body) + padding)))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        block = b" " * 65536
        while padding > 0:
            piece = block[: min(padding, len(block))]
            padding -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": padding > 0})
        if not fault.get("bytes"):
            await send({"type": "http.response.body", "body": b""})


# ---- application -----------------------------------------------------------------------------


def create_app(sandbox: Sandbox) -> FastAPI:
    """Build the ASGI app serving ``sandbox``."""
    sb = sandbox
    bank = sb.bank
    app = FastAPI(title="Flinks Open Banking sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = sb
    pages = PageCache()
    app.state.page_cache = pages

    @app.exception_handler(Denied)
    async def _denied(request: Request, exc: Denied) -> Response:
        return exc.response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and request.url.path.startswith(f"{FDX}/accounts/"):
            # e.g. an account id holding an encoded "/": no route matches, but for the client it is
            # simply an account that does not exist
            return fdx_error(404, "701", "Account not found", f"No such resource {request.url.path!r}")
        # keep the exception's headers: a 405 carries ``Allow`` (RFC 9110 15.5.6)
        return fdx_error(
            exc.status_code,
            str(exc.status_code),
            str(exc.detail),
            f"{request.method} {request.url.path}",
            dict(exc.headers or {}),
        )

    @app.exception_handler(KnobError)
    async def _knob_error(request: Request, exc: KnobError) -> Response:
        return json_response({"error": str(exc)}, 400)

    # ---- helpers ------------------------------------------------------------------------------

    def bearer(request: Request) -> AccessToken:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() != "bearer " or not auth[7:].strip():
            raise Denied(invalid_token("Missing bearer access token"))
        at = sb.lookup_access(auth[7:].strip())
        if at is None:
            raise Denied(invalid_token("Unknown or expired access token"))
        return at

    def customer_token(request: Request, scope: str | None) -> AccessToken:
        at = bearer(request)
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

    def customer_of(at: AccessToken) -> Customer:
        assert at.consent is not None
        return bank.customer_by_id[at.consent.customer_id]

    def own_account(at: AccessToken, account_id: str) -> Account:
        account = bank.account_by_id.get(account_id)
        if account is None or at.consent is None or account.customer_id != at.consent.customer_id:
            raise Denied(
                fdx_error(404, "701", "Account not found", f"No account {account_id!r} for this customer")
            )
        return account

    def paging(request: Request) -> tuple[int, int]:
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
                raise Denied(
                    fdx_error(400, "401", "Invalid input", f"Invalid offset {raw_offset!r}")
                ) from None
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
        if raw is None or raw == "":
            return None
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

    def date_window(request: Request) -> tuple[int | None, int | None]:
        if sb.knobs.strict_fdx53:  # a strict FDX 5.3 server ignores the dates: every record
            return None, None
        start = parse_day(request.query_params.get("startTime"), "startTime")
        end = parse_day(request.query_params.get("endTime"), "endTime")
        if start and end and end < start:
            raise Denied(fdx_error(400, "703", "Invalid date range", "endTime is before startTime"))
        return (
            date_to_epoch(start) if start else None,
            date_to_epoch(end) + DAY - 1 if end else None,
        )

    def rate_limited(wait: float) -> Response:
        return fdx_error(
            429,
            "1207",
            "Too many requests",
            f"over the rate limit of {sb.knobs.rate_limit_rps:g} requests/s for this client",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def empty_1107() -> Response:
        return fdx_error(404, "1107", "No data found for the given parameters", "empty result")

    def balance_as_of() -> str:
        return iso_ts(sb.now)

    # ---- OAuth ----------------------------------------------------------------------------

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

    @app.post("/api/v1/token")
    async def token(request: Request) -> Response:
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
                    return rate_limited(wait)
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
            return json_response(
                {"error": err.error, "error_description": err.description}, err.status, headers
            )

    @app.get("/api/v1/providers")
    async def providers(request: Request) -> Response:
        bearer(request)
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

    def approve(pending: PendingAuthorization) -> Response:
        code = sb.new_code(pending.client_id, pending.redirect_uri, pending.customer_id, pending.scopes)
        return redirect(pending.redirect_uri, {"code": code, "state": pending.state})

    def deny(redirect_uri: str, state: str | None) -> Response:
        params = {"error": "access_denied", "error_description": "The user denied the access", "state": state}
        return redirect(redirect_uri, params)

    def picker_customers(selected: str) -> list[Customer]:
        """The first customers (a bank of 100,000 would make a page nobody can use), plus the selected one."""
        shown = list(bank.customers[:PICKER_CUSTOMERS])
        if all(c.customer_id != selected for c in shown) and selected in bank.customer_by_id:
            shown.append(bank.customer_by_id[selected])
        return shown

    def consent_page(request_id: str, pending: PendingAuthorization, provider_id: str | None) -> Response:
        provider = next((p["name"] for p in PROVIDERS if p["id"] == provider_id), PROVIDERS[0]["name"])
        options = "".join(
            f'<option value="{c.customer_id}"{" selected" if c.customer_id == pending.customer_id else ""}>'
            f"{html.escape(c.first)} {html.escape(c.last)} ({c.customer_id})</option>"
            for c in picker_customers(pending.customer_id)
        )
        scopes = "".join(
            f"<li><code>{s}</code> - {html.escape(SCOPE_LABELS[s])}</li>" for s in pending.scopes
        )
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

    @app.get("/api/v1/authorize")
    async def authorize(request: Request) -> Response:
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
        customer_id = q.get("login_hint") or sb.knobs.consent_customer_id or bank.customers[0].customer_id
        if customer_id not in bank.customer_by_id:
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
            return consent_page(request_id, pending, provider_id)
        return approve(pending)

    @app.post("/api/v1/authorize/decision")
    async def authorize_decision(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        pending = sb.pending_auth.pop(form.get("request_id", ""), None)
        if pending is None or pending.expires_at <= time.monotonic():
            return authorize_error_page(
                request, "invalid_request", "Unknown or expired authorization request"
            )
        if form.get("customer_id"):
            if form["customer_id"] not in bank.customer_by_id:
                return authorize_error_page(request, "invalid_request", "Unknown customer")
            pending.customer_id = form["customer_id"]
        if form.get("decision") == "approve":
            return approve(pending)
        return deny(pending.redirect_uri, pending.state)

    @app.delete("/api/v1/revoke")
    async def revoke(request: Request) -> Response:
        at = bearer(request)
        if at.consent is None:
            return fdx_error(
                401, "401", "A customer access token is required", "client-credentials token used"
            )
        sb.revoke(at.consent)
        return Response(status_code=204)

    # ---- FDX data -----------------------------------------------------------------------------

    @app.get(f"{FDX}/accounts")
    async def accounts(request: Request) -> Response:
        q = request.query_params
        result_type = q.get("resultType") or "lightweight"
        if result_type not in ("lightweight", "details"):
            return fdx_error(
                400, "401", "Invalid input", f"resultType must be lightweight or details: {result_type!r}"
            )
        at = customer_token(request, "ACCOUNT_BASIC" if result_type == "lightweight" else "ACCOUNT_DETAILED")
        selected = customer_of(at).accounts
        if q.get("accountIds") and not sb.knobs.strict_fdx53:  # not an FDX 5.3 parameter
            wanted = {sb.unalias(x.strip()) for x in q["accountIds"].split(",") if x.strip()}
            selected = [a for a in selected if a.account_id in wanted]
            if not selected:
                return fdx_error(
                    404, "701", "Account not found", "none of accountIds belongs to this customer"
                )
        offset, limit = paging(request)
        doc = page_doc(request, offset, limit, len(selected))
        # FDX 5.3 has holdings only on /accounts/{accountId}
        holdings = "INVESTMENTS" in at.scopes and not sb.knobs.strict_fdx53
        as_of = balance_as_of()
        doc["accounts"] = [
            {a.wrapper: a.lightweight() if result_type == "lightweight" else a.full(as_of, holdings=holdings)}
            for a in selected[offset : offset + limit]
        ]
        return json_response(doc)

    @app.get(f"{FDX}/accounts/{{accountId}}")
    async def account(request: Request) -> Response:
        at = customer_token(request, "ACCOUNT_DETAILED")
        acct = own_account(at, request.path_params["accountId"])
        return json_response({acct.wrapper: acct.full(balance_as_of(), holdings="INVESTMENTS" in at.scopes)})

    @app.get(f"{FDX}/accounts/{{accountId}}/transactions")
    async def transactions(request: Request) -> Response:
        at = customer_token(request, "TRANSACTIONS")
        acct = own_account(at, request.path_params["accountId"])
        start, end = date_window(request)
        offset, limit = paging(request)
        count = sb.transactions_for(acct.account_id)
        window = bank.series(acct, count).window(sb.now, start, end)
        if window.total == 0 and sb.knobs.empty_as_1107:
            return empty_1107()
        doc = page_doc(request, offset, limit, window.total)
        key = (acct.account_id, count, sb.now, start, end, offset, limit)
        items = pages.get(key)
        if items is None:
            wrapper = acct.txn_wrapper
            items = dumps([{wrapper: rec} for rec in window.slice(offset, limit)])
            pages.put(key, items)
        return json_response_with_items(doc, "transactions", items)

    @app.get(f"{FDX}/accounts/{{accountId}}/statements")
    async def statements(request: Request) -> Response:
        at = customer_token(request, "STATEMENTS")
        acct = own_account(at, request.path_params["accountId"])
        start, end = date_window(request)
        offset, limit = paging(request)
        found = bank.statements(acct, sb.now)
        if start is not None:
            found = [s for s in found if date_to_epoch(s.statement_date) >= start]
        if end is not None:
            found = [s for s in found if date_to_epoch(s.statement_date) <= end]
        if not found and sb.knobs.empty_as_1107:
            return empty_1107()
        doc = page_doc(request, offset, limit, len(found))
        doc["statements"] = [bank.statement_json(s, FDX) for s in found[offset : offset + limit]]
        return json_response(doc)

    def statement_pdf(acct: Account, statement_id: str) -> tuple[bytes, str] | None:
        st = next((s for s in bank.statements(acct, sb.now) if s.statement_id == statement_id), None)
        if st is None:
            return None
        customer = bank.customer_by_id[acct.customer_id]
        series = bank.series(acct, sb.transactions_for(acct.account_id))
        count = series.window(
            sb.now, date_to_epoch(st.period_start), date_to_epoch(st.statement_date) + DAY - 1
        )
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

    def file_signature(account_id: str, statement_id: str) -> str:
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

    @app.get(f"{FDX}/accounts/{{accountId}}/statements/{{statementId}}")
    async def statement(request: Request) -> Response:
        at = customer_token(request, "STATEMENTS")
        acct = own_account(at, request.path_params["accountId"])
        statement_id = request.path_params["statementId"]
        if not any(s.statement_id == statement_id for s in bank.statements(acct, sb.now)):
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
            sig = file_signature(acct.account_id, statement_id)
            location = (
                f"{str(request.base_url).rstrip('/')}/_files/statements/{acct.account_id}/{statement_id}.pdf"
            )
            return RedirectResponse(f"{location}?sig={sig}", status_code=302)
        rendered = statement_pdf(acct, statement_id)
        assert rendered is not None
        pdf, sid = rendered
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{sid}.pdf"'},
        )

    @app.get("/_files/statements/{accountId}/{file}")
    async def statement_file(request: Request) -> Response:
        account_id = request.path_params["accountId"]
        statement_id = request.path_params["file"].removesuffix(".pdf")
        acct = bank.account_by_id.get(account_id)
        sig = request.query_params.get("sig", "")
        if acct is None or not hmac.compare_digest(sig, file_signature(account_id, statement_id)):
            return Response(b"<Error><Code>AccessDenied</Code></Error>", 403, media_type="application/xml")
        rendered = statement_pdf(acct, statement_id)
        if rendered is None:
            return Response(b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml")
        return Response(rendered[0], media_type="application/pdf")

    @app.get(f"{FDX}/accounts/{{accountId}}/contact")
    async def contact(request: Request) -> Response:
        at = customer_token(request, "CUSTOMER_CONTACT")
        acct = own_account(at, request.path_params["accountId"])
        return json_response(acct.contact(bank.customer_by_id[acct.customer_id]))

    @app.get(f"{FDX}/accounts/{{accountId}}/payment-networks")
    async def payment_networks(request: Request) -> Response:
        at = customer_token(request, "ACCOUNT_PAYMENTS")
        acct = own_account(at, request.path_params["accountId"])
        networks = acct.payment_networks()
        if not networks:
            return fdx_error(
                422, "704", "Account type not supported", f"{acct.account_type} has no payment networks"
            )
        offset, limit = paging(request)
        doc = page_doc(request, offset, limit, len(networks))
        doc["paymentNetworks"] = networks[offset : offset + limit]
        return json_response(doc)

    @app.get(f"{FDX}/customers/current")
    async def customer_current(request: Request) -> Response:
        at = customer_token(request, "CUSTOMER_PERSONAL")
        customer = customer_of(at)
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

    @app.get("/")
    async def root() -> Response:
        return json_response(
            {
                "name": "Flinks Open Banking sandbox (FDX 5)",
                "token": "/api/v1/token",
                "authorize": "/api/v1/authorize",
                "fdx": FDX,
                "admin": "/_admin/config",
            }
        )

    # ---- admin ----------------------------------------------------------------------------

    async def json_body(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise KnobError("body must be JSON") from None

    @app.get("/_admin/config")
    async def get_config() -> Response:
        return json_response(sb.knobs.as_json())

    @app.post("/_admin/config")
    async def set_config(request: Request) -> Response:
        changes = await json_body(request)
        if not isinstance(changes, dict):
            raise KnobError("body must be a JSON object of knobs")
        sb.knobs.update(changes, bank)
        return json_response(sb.knobs.as_json())

    @app.get("/_admin/faults")
    async def get_faults() -> Response:
        return json_response({"faults": sb.faults})

    @app.post("/_admin/faults")
    async def add_faults(request: Request) -> Response:
        specs = await json_body(request)
        sb.add_faults(specs if isinstance(specs, list) else [specs])
        return json_response({"faults": sb.faults})

    @app.delete("/_admin/faults")
    async def clear_faults() -> Response:
        sb.faults.clear()
        return json_response({"faults": []})

    @app.get("/_admin/counters")
    async def counters() -> Response:
        return json_response(sb.counters)

    @app.delete("/_admin/counters")
    async def clear_counters() -> Response:
        sb.counters = new_counters()
        return json_response(sb.counters)

    @app.post("/_admin/reset")
    async def reset() -> Response:
        sb.reset()
        return json_response({"status": "reset"})

    @app.get("/_admin/issued")
    async def issued() -> Response:
        return json_response({kind: list(values) for kind, values in sb.issued.items()})

    @app.post("/_admin/tokens/expire")
    async def expire_tokens(request: Request) -> Response:
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

    @app.post("/_admin/clients")
    async def register_client(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise KnobError("body must be an object")
        client = sb.register_client(
            str(body.get("client_id") or ""),
            str(body.get("client_secret") or ""),
            body.get("redirect_uris") or [],
        )
        return json_response({"client_id": client.client_id, "redirect_uris": client.redirect_uris}, 201)

    @app.get("/_admin/consents")
    async def list_consents() -> Response:
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

    @app.post("/_admin/consents")
    async def grant_consent(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise KnobError("body must be an object")
        customer_id = body.get("customer_id") or sb.knobs.consent_customer_id or bank.customers[0].customer_id
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

    @app.post("/_admin/consents/bulk")
    async def grant_consents_bulk(request: Request) -> Response:
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

    @app.post("/_admin/consents/revoke")
    async def revoke_consent(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise KnobError("body must be an object")
        count = sb.revoke_where(
            customer_id=body.get("customer_id"),
            refresh_token=body.get("refresh_token"),
            at_bank=bool(body.get("at_bank")),
        )
        return json_response({"revoked": count})

    @app.get("/_admin/customers")
    async def list_customers() -> Response:
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
                for c in bank.customers
            ]
        )

    @app.get("/_admin/truth/accounts")
    async def truth_accounts(request: Request) -> Response:
        customer_id = request.query_params.get("customer_id")
        if customer_id:
            if customer_id not in bank.customer_by_id:
                return json_response({"error": f"unknown customer {customer_id!r}"}, 404)
            selected = bank.customer_by_id[customer_id].accounts
        else:
            selected = [a for c in bank.customers for a in c.accounts]
        as_of = balance_as_of()
        return json_response([a.full(as_of, holdings=True) for a in selected])

    @app.get("/_admin/truth/transactions")
    async def truth_transactions(request: Request) -> Response:
        q = request.query_params
        acct = bank.account_by_id.get(sb.unalias(q.get("account_id", "")))
        if acct is None:
            return json_response({"error": f"unknown account {q.get('account_id')!r}"}, 404)
        try:
            start = parse_day(q.get("start"), "start")
            end = parse_day(q.get("end"), "end")
        except Denied:
            return json_response({"error": "start/end must be YYYY-MM-DD"}, 400)
        window = bank.series(acct, sb.transactions_for(acct.account_id)).window(
            sb.now,
            date_to_epoch(start) if start else None,
            date_to_epoch(end) + DAY - 1 if end else None,
        )
        return json_response(list(window.slice(0, window.total)))

    app.add_middleware(SandboxMiddleware, sandbox=sb)
    return app
