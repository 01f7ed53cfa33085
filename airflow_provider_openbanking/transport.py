"""HTTP transport: one keep-alive session, timeouts, retries, error mapping.

This is the only place that sends requests. It knows nothing of OAuth except that a bearer token
comes from a :class:`TokenSource` and that a 401 which is not 602 means "that token went stale":
it asks the source for a fresh one once and replays the request. Everything transient (1207 rate
limits at 429 or 422, 5xx, 501 maintenance, dropped connections, bodies that are not JSON) is
retried by tenacity with exponential backoff and jitter, honouring ``Retry-After``, bounded in
attempts and in elapsed time. JSON bodies larger than ``max_response_bytes`` are refused. Every other error is raised at once as a typed
:mod:`~airflow_provider_openbanking.exceptions` error naming endpoint, status, code, message and the
correlation headers.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import requests
import tenacity
from requests.adapters import HTTPAdapter

if TYPE_CHECKING:
    from airflow_provider_openbanking.ratelimit import RateLimiter

from airflow_provider_openbanking.exceptions import (
    AccessTokenRejectedError,
    AccountUnavailableError,
    ApiError,
    ConsentRequiredError,
    MalformedResponseError,
    NoDataError,
    ResponseTooLargeError,
    StatementProcessingError,
    TransientApiError,
)

try:  # msgspec ships with the Airflow Task SDK and decodes pages ~2x faster than json.
    import msgspec

    _decode: Callable[[bytes], Any] = msgspec.json.decode
    _DecodeError: tuple[type[Exception], ...] = (msgspec.DecodeError, ValueError)
except ImportError:  # pragma: no cover
    _decode = json.loads
    _DecodeError = (ValueError,)

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
#: Largest JSON body accepted (a page of 1,000 FDX transactions is about 1 MB): a server that
#: sends more is refused instead of filling the worker's memory.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20
_READ_CHUNK = 1 << 20
#: Error bodies are read up to this size (FDX error documents are a few hundred bytes).
_MAX_ERROR_BODY = 1 << 20
#: What an SSLError says when the server's certificate (or its name) is not trusted.
_CERT_FAILURE = re.compile(r"certificate verify failed[^'\")]*|hostname '[^']*' doesn't match[^'\")]*")


class TokenSource(Protocol):
    """Gives the transport a bearer token and takes back one that the server refused."""

    def get(self) -> str:
        """Return a valid access token (from cache or freshly obtained)."""

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the server answered 401 to it)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry loop. Defaults suit a 300 s token and a rate-limited API."""

    max_attempts: int = 6
    max_elapsed: float = 120.0
    initial_wait: float = 1.0
    max_wait: float = 30.0


def path_segment(value: Any) -> str:
    """Quote an id for use as one URL path segment.

    Ids come from the server and may hold ``/``, ``?``, ``#`` or be ``..``: quoted with no safe
    characters (and dots escaped when the whole segment is dots, which URL libraries would
    otherwise resolve), an id can never change which endpoint is called.
    """
    text = str(value)
    if not text:
        raise ValueError("an id used in a URL path must not be empty")
    quoted = quote(text, safe="")
    if set(quoted) == {"."}:
        quoted = quoted.replace(".", "%2E")
    return quoted


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _classify(status: int, code: str | None) -> type[ApiError]:
    if code == "602":
        return ConsentRequiredError
    if code == "1207" or status == 429:
        return TransientApiError
    if code == "1300":
        return StatementProcessingError
    if code == "1107":
        return NoDataError
    if code in ("704", "705"):
        return AccountUnavailableError
    if status in RETRYABLE_STATUS or code in ("500", "501", "503"):
        return TransientApiError
    return ApiError


_HINTS = {
    "701": "The account id is not known to the server for this consent",
    "702": "Check start_time/end_time (YYYY-MM-DD)",
    "703": "Check that start_time is not after end_time",
    "1203": "Use Accept: application/pdf (or an image type the server supports)",
    "403": "The subscription was not found: check the client id and the provider",
}


class Transport:
    """One ``requests.Session`` per hook, with retries and error mapping (see module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        redact: Callable[[str], str] = lambda s: s,
        pool_size: int = 16,
        conn_id: str | None = None,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.conn_id = conn_id
        #: Shared by every transport of the same client (see :mod:`..ratelimit`): ``acquire()``
        #: before every request sent, ``pause_until()`` when a 429/1207 carries Retry-After.
        self.rate_limiter = rate_limiter
        self.max_response_bytes = max_response_bytes
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(10.0, timeout), timeout)
        self.verify = verify
        self.retry = retry or RetryPolicy()
        self.redact = redact
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "airflow-provider-openbanking"

    def close(self) -> None:
        self.session.close()

    # -- public API ---------------------------------------------------------------------------

    def request_json(
        self,
        method: str,
        path: str,
        *,
        token_source: TokenSource | None = None,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        form_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        """Send a request and return its decoded JSON body (None for an empty 2xx body)."""

        def attempt() -> Any:
            resp = self._send(method, path, token_source, params, json_body, form_body, headers, auth, True)
            content = self._read(method, path, resp, self.max_response_bytes)
            if not content:
                return None
            try:
                return _decode(content)
            except _DecodeError:
                raise self._malformed(method, path, resp, content) from None

        return self._with_retries(method, path, attempt)

    def request_stream(
        self,
        method: str,
        path: str,
        *,
        token_source: TokenSource | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send a request whose body the caller streams (``iter_content``); redirects are followed.

        Errors that arrive before the body (statuses, 1300 "still processing") are retried here;
        the caller owns the response and must close it.
        """

        def attempt() -> requests.Response:
            return self._send(method, path, token_source, params, None, None, headers, None, True)

        result: requests.Response = self._with_retries(method, path, attempt)
        return result

    # -- internals ----------------------------------------------------------------------------

    def _with_retries(self, method: str, path: str, attempt: Callable[[], Any]) -> Any:
        policy = self.retry
        backoff = tenacity.wait_exponential_jitter(initial=policy.initial_wait, max=policy.max_wait)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                return float(min(retry_after, policy.max_elapsed))
            return float(backoff(state))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s (attempt %d of %d); retrying in %.2fs",
                exc,
                state.attempt_number,
                policy.max_attempts,
                sleep,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.max_attempts)
            | tenacity.stop_after_delay(policy.max_elapsed),
            wait=wait,
            retry=tenacity.retry_if_exception_type(TransientApiError),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _read(self, method: str, path: str, resp: requests.Response, limit: int | None) -> bytes:
        """The body of a streamed response, refused (:class:`ResponseTooLargeError`) beyond ``limit``
        bytes -- by its ``Content-Length`` before reading, else as soon as it is exceeded."""
        try:
            declared = int(resp.headers.get("content-length") or -1)
        except ValueError:
            declared = -1
        if limit and declared > limit:
            resp.close()
            raise self._too_large(method, path, resp, limit)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(chunk_size=_READ_CHUNK):
                size += len(chunk)
                if limit and size > limit:
                    resp.close()
                    raise self._too_large(method, path, resp, limit)
                chunks.append(chunk)
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            resp.close()
            raise self._network_error(method, path, exc) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}{path}"

    def _send(
        self,
        method: str,
        path: str,
        token_source: TokenSource | None,
        params: Mapping[str, Any] | None,
        json_body: Any,
        form_body: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
        stream: bool,
    ) -> requests.Response:
        """One attempt, including the single replay after a stale-token 401."""
        replayed = False
        while True:
            hdrs = {"x-fapi-interaction-id": str(uuid.uuid4()), "Accept": "application/json"}
            if headers:
                hdrs.update(headers)
            token = None
            if token_source is not None:
                token = token_source.get()
                hdrs["Authorization"] = f"Bearer {token}"
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            try:
                resp = self.session.request(
                    method,
                    self._url(path),
                    params=params,
                    json=json_body,
                    data=form_body,
                    headers=hdrs,
                    auth=auth,
                    timeout=self.timeout,
                    verify=self.verify,
                    stream=stream,
                    allow_redirects=True,
                )
            except requests.exceptions.SSLError as exc:
                reason = _CERT_FAILURE.search(str(exc))
                if reason is None:  # a handshake cut short: as transient as any dropped connection
                    raise self._network_error(method, path, exc) from None
                raise ApiError(  # an untrusted certificate stays untrusted: not retried
                    self._endpoint(method, path),
                    None,
                    None,
                    f"TLS {reason.group(0)}",
                    hint="The server's certificate is not trusted: set the connection's verify extra to "
                    "the CA bundle that signed it (verify: false turns the check off; never in production)",
                ) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                # ChunkedEncodingError and ContentDecodingError are not subclasses of
                # ConnectionError, but a body cut mid-way is just as transient.
                raise self._network_error(method, path, exc) from None
            except (
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                raise self._network_error(method, path, exc) from None
            if resp.status_code < 400:
                return resp
            try:
                content = self._read(method, path, resp, _MAX_ERROR_BODY) if stream else resp.content
            except ResponseTooLargeError:
                content = b""
            error = self._error(method, path, resp, content)
            resp.close()
            if (
                self.rate_limiter is not None
                and error.retry_after is not None
                and (resp.status_code == 429 or error.code == "1207")
            ):
                self.rate_limiter.pause_until(time.monotonic() + error.retry_after)
            if (
                resp.status_code == 401
                and token_source is not None
                and token is not None
                and not isinstance(error, ConsentRequiredError)
            ):
                token_source.invalidate(token)
                if not replayed:
                    replayed = True
                    log.info(
                        "%s: access token refused (HTTP 401); refreshed it and replaying", error.endpoint
                    )
                    continue
                raise error.recast(
                    AccessTokenRejectedError,
                    hint="A freshly refreshed access token was refused too: check the client id/secret "
                    "and that the API base URL is right",
                )
            raise error

    def _endpoint(self, method: str, path: str) -> str:
        shown = path.split("?", 1)[0]
        if shown.startswith(self.base_url):
            shown = shown[len(self.base_url) :]
        return f"{method} {shown}"

    def _network_error(self, method: str, path: str, exc: Exception) -> TransientApiError:
        return TransientApiError(
            self._endpoint(method, path),
            None,
            None,
            self.redact(f"{type(exc).__name__}: connection failed or dropped mid-response"),
        )

    def _too_large(
        self, method: str, path: str, resp: requests.Response, limit: int
    ) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            self._endpoint(method, path),
            resp.status_code,
            None,
            f"the response body is larger than {limit} bytes: refused",
            correlation_id=resp.headers.get("ob-correlation-id"),
            trace_id=resp.headers.get("ob-trace-id"),
            hint="Raise the connection's max_response_bytes extra if the server's pages really are "
            "that large, or ask for smaller pages (page_size)",
        )

    def _malformed(
        self, method: str, path: str, resp: requests.Response, content: bytes
    ) -> MalformedResponseError:
        ctype = resp.headers.get("content-type", "?")
        return MalformedResponseError(
            self._endpoint(method, path),
            resp.status_code,
            None,
            f"the body is not valid JSON (content-type {ctype}, {len(content)} bytes)",
            correlation_id=resp.headers.get("ob-correlation-id"),
            trace_id=resp.headers.get("ob-trace-id"),
        )

    def _error(self, method: str, path: str, resp: requests.Response, content: bytes) -> ApiError:
        body: Any = None
        try:
            body = _decode(content) if content else None
        except _DecodeError:
            body = None
        code: str | None = None
        message: str | None = None
        if isinstance(body, dict):
            raw_code = body.get("code", body.get("error"))
            code = None if raw_code is None else str(raw_code)
            message = body.get("message") or body.get("error_description")
            debug = body.get("debugMessage")
            if debug and debug != message:
                message = f"{message} ({debug})" if message else str(debug)
        else:
            ctype = resp.headers.get("content-type", "?").split(";")[0]
            message = f"non-JSON error body ({ctype}): a proxy or gateway may have answered"
        cls = _classify(resp.status_code, code)
        return cls(
            self._endpoint(method, path),
            resp.status_code,
            code,
            self.redact(str(message)) if message else None,
            correlation_id=resp.headers.get("ob-correlation-id"),
            trace_id=resp.headers.get("ob-trace-id"),
            hint=ConsentRequiredError.hint_for(self.conn_id)
            if cls is ConsentRequiredError
            else _HINTS.get(code or ""),
            retry_after=_parse_retry_after(resp.headers.get("Retry-After")),
        )
