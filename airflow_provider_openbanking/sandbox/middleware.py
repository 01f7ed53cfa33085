"""The pure-ASGI middleware in front of every router: ``ob-correlation-id`` / ``ob-trace-id`` on
every response, request and status counters, latency, the per-client rate limit, fault injection,
id aliases, and loopback-only admin endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .responses import FDX, dumps, encode_offset
from .state import Sandbox

log = logging.getLogger("airflow_provider_openbanking.sandbox")

LOOPBACK = ("127.0.0.1", "::1", "localhost", "testclient")

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


def _expire_presented_token(scope: Scope, sb: Sandbox) -> None:
    """Expire the bearer token a request carries (if any)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            auth = value.decode("latin-1")
            if auth[:7].lower() == "bearer ":
                sb.expire_access_token(auth[7:].strip())
            return


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
                if fault is not None and fault["kind"] == "expire_token":
                    # The bank kills the presented token just before this request reaches it: the
                    # real authorization check then answers 401, as for any token that died early.
                    _expire_presented_token(scope, sb)
                    fault = None
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
