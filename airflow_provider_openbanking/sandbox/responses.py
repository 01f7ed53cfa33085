"""Response helpers shared by every router: JSON bytes, FDX error bodies, opaque offsets, and the
exception handlers that turn :class:`Denied`, HTTP errors and :class:`KnobError` into responses.

Data endpoints build their JSON bytes directly (no response models): see ``dumps``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

FDX = "/api/fdx/5"
MAX_LIMIT = 1000

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


class Denied(Exception):
    """Raised by helpers to short-circuit a handler with a ready error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


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


# ---- exception handlers (installed by ``create_app``) ---------------------------------------


async def denied_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Denied)
    return exc.response


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
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


async def knob_error_handler(request: Request, exc: Exception) -> Response:
    return json_response({"error": str(exc)}, 400)
