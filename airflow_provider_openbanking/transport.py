"""HTTP transport: one keep-alive session, timeouts, retries, error mapping.

This is the only place that sends requests. It knows nothing of OAuth except that a bearer token
comes from a :class:`TokenSource` and that a 401 which is not 602 means "that token went stale":
it asks the source for a fresh one and replays the request, up to :data:`MAX_TOKEN_REPLAYS` times
(a fresh token can die too, when its request stalls past a short token's life). Everything
transient (1207 rate limits at 429 or 422, 5xx, 501 maintenance, dropped connections, bodies that
are not JSON) is retried with exponential backoff and jitter, honouring ``Retry-After``. JSON
bodies larger than ``max_response_bytes`` are refused. Every other error is raised at once as a typed
:mod:`~airflow_provider_openbanking.exceptions` error naming endpoint, status, code, message and,
when a server answered, the correlation headers.

**One retry budget per logical call.** A call (``request_json``/``request_stream``) gets
``max_attempts`` attempts and ``max_elapsed`` seconds. A request made *on behalf of* that call in
the same thread -- the token request the token source sends when the cached access token has to be
refreshed -- is one attempt inside the caller's attempt, never a retry loop of its own: retrying it
is the caller's loop's job, so a server that is down costs ``max_attempts`` attempts in all
(instead of ``max_attempts`` squared), and the log counts them straight. No attempt starts after
``max_elapsed``, and every request's timeouts are cut to what is left of ``max_elapsed`` plus one
request timeout, so the whole call gives up within that. Network errors name ``host:port`` and the
cause (``Connection refused``, ``Name or service not known``, a read timeout).

**Rate limiter hook-point.** ``Transport(..., rate_limiter=...)`` takes any object with
``acquire()`` (called before every request sent, blocking until it may go) and
``pause_until(monotonic_deadline)`` (called when a 429/1207 carries ``Retry-After``, so every thread
sharing the limiter waits until then).
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

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
#: Replays of one request after a 401, each with a freshly refreshed token. More than one: a
#: fresh short-lived token can die too when its request stalls (a loaded worker, a long queue),
#: and that is no reason to fail the account. Misconfiguration (tokens that never work) still
#: ends the call at its first attempt, after this many grants.
MAX_TOKEN_REPLAYS = 2
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
        """Return a valid access token (from cache or freshly obtained). With a rate limiter it
        is called twice per request, before and after the wait for a slot: it must be cheap when
        the cached token is still good."""

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the server answered 401 to it)."""


class RateLimiter(Protocol):
    """What the transport needs of a rate limiter (shared by every thread of one client)."""

    def acquire(self) -> None:
        """Block until one more request may be sent (called before every request)."""

    def pause_until(self, monotonic_deadline: float) -> None:
        """The server said "retry after": nobody sends before ``monotonic_deadline``."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of one logical call's retries. Defaults suit a 300 s token and a rate-limited API.

    ``max_attempts`` attempts and ``max_elapsed`` seconds in all; the wait before attempt *n*+1 is
    ``initial_wait * 2**(n-1)`` (at most ``max_wait``) plus a random jitter of up to
    ``min(1 s, initial_wait)``, or what ``Retry-After`` asks for.
    """

    max_attempts: int = 6
    max_elapsed: float = 120.0
    initial_wait: float = 1.0
    max_wait: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_wait, self.initial_wait * 2 ** (attempt - 1))
        return min(self.max_wait, base + random.uniform(0, min(1.0, self.initial_wait)))


@dataclass
class _Budget:
    """The retry budget of one logical call, shared by the requests sent on its behalf."""

    endpoint: str
    policy: RetryPolicy
    #: One request's timeout (the read timeout): the grace after ``max_elapsed``.
    grace: float
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0

    @property
    def deadline(self) -> float:
        """No attempt starts after this."""
        return self.started + self.policy.max_elapsed

    @property
    def hard_deadline(self) -> float:
        """No request of this call runs after this."""
        return self.deadline + self.grace

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (urllib3 hides the socket error two levels down)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ):
            if isinstance(nested, BaseException):
                todo.append(nested)


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def network_cause(exc: BaseException) -> str:
    """The reason a request failed at the network level, in words (``Connection refused``)."""
    chain = list(_exception_chain(exc))
    for item in chain:
        strerror = getattr(item, "strerror", None)
        if isinstance(item, OSError) and strerror:
            return str(strerror)
    match = _ERRNO_TEXT.search(str(exc))
    if match:
        return match.group(1).strip()
    for item in reversed(chain):  # the innermost error that says something
        text = str(item).strip()
        if text and "Pool(" not in text and "Max retries" not in text:
            return text.rstrip(".")
    return type(exc).__name__


def _is_connect_failure(exc: BaseException) -> bool:
    """Whether no connection was made at all (refused, unresolvable, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    try:
        from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(e, (NewConnectionError, ConnectTimeoutError)) for e in _exception_chain(exc))


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
        self.rate_limiter = rate_limiter
        #: The budget of the logical call this thread is in (None outside any call).
        self._calls = threading.local()
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
        """Run ``attempt`` until it succeeds, raises a non-transient error, or the budget is spent.

        Inside another call of this thread (a token request sent while a data request picks its
        bearer token) there is no loop of its own: one attempt, and the caller's loop retries.
        """
        if getattr(self._calls, "budget", None) is not None:
            return attempt()
        policy = self.retry
        budget = _Budget(self._endpoint(method, path), policy, grace=self.timeout[1])
        self._calls.budget = budget
        try:
            while True:
                budget.attempts += 1
                try:
                    return attempt()
                except TransientApiError as exc:
                    delay = self._next_delay(budget, exc)
                    if delay is None:
                        raise self._gave_up(budget, exc) from None
                    log.warning(
                        "%s: attempt %d of %d failed after %.1f s, retrying in %.2fs: %s",
                        budget.endpoint,
                        budget.attempts,
                        policy.max_attempts,
                        budget.elapsed(),
                        delay,
                        exc.recast(hint=""),  # the hint comes once, with the final error
                    )
                    time.sleep(delay)
        finally:
            self._calls.budget = None

    @staticmethod
    def _next_delay(budget: _Budget, exc: TransientApiError) -> float | None:
        """Seconds to wait before the next attempt, or None when the budget is spent."""
        if budget.attempts >= budget.policy.max_attempts:
            return None
        retry_after = exc.retry_after
        delay = float(retry_after) if retry_after is not None else budget.policy.backoff(budget.attempts)
        if time.monotonic() + delay >= budget.deadline:
            return None  # the next attempt would start after max_elapsed
        return delay

    def _gave_up(self, budget: _Budget, exc: TransientApiError) -> TransientApiError:
        """The last error, saying how long and how often it was tried."""
        policy = budget.policy
        on_behalf = "" if exc.endpoint == budget.endpoint else f" on {budget.endpoint}"
        note = (
            f"Gave up{on_behalf} after {budget.attempts} attempt(s) in {budget.elapsed():.1f} s "
            f"(max_attempts {policy.max_attempts}, max_elapsed {policy.max_elapsed:g} s)"
        )
        if exc.retry_after is not None and budget.attempts < policy.max_attempts:
            note += f": the server asked to wait {exc.retry_after:g} s, beyond what is left"
        error = exc.recast(hint=f"{note}. {exc.hint}" if exc.hint else note)
        assert isinstance(error, TransientApiError)
        return error

    def _timeouts(self) -> tuple[float, float]:
        """The (connect, read) timeouts of the next request: cut to what is left of the call."""
        budget: _Budget | None = getattr(self._calls, "budget", None)
        if budget is None:
            return self.timeout
        left = max(0.05, budget.hard_deadline - time.monotonic())
        return (min(self.timeout[0], left), min(self.timeout[1], left))

    def where(self, path: str = "") -> str:
        """``host:port`` that ``path`` is sent to (for messages)."""
        parts = urlsplit(self._url(path))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or "?"
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

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
        """One attempt, including up to :data:`MAX_TOKEN_REPLAYS` replays after stale-token 401s."""
        replays = 0
        while True:
            hdrs = {"x-fapi-interaction-id": str(uuid.uuid4()), "Accept": "application/json"}
            if headers:
                hdrs.update(headers)
            token = None
            if token_source is not None:
                token = token_source.get()  # a refresh grant, if one is due, is sent (and paced) first
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
                if token_source is not None:
                    # Asked again after the wait (a cache hit unless the wait outlived the token):
                    # a thread that waited in the bucket, or out a client-wide Retry-After, must
                    # not send a token that expired while it waited.
                    token = token_source.get()
            if token is not None:
                hdrs["Authorization"] = f"Bearer {token}"
            try:
                resp = self.session.request(
                    method,
                    self._url(path),
                    params=params,
                    json=json_body,
                    data=form_body,
                    headers=hdrs,
                    auth=auth,
                    timeout=self._timeouts(),
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
                if replays < MAX_TOKEN_REPLAYS:
                    replays += 1
                    log.info(
                        "%s: access token refused (HTTP 401); refreshed it and replaying", error.endpoint
                    )
                    continue
                raise error.recast(
                    AccessTokenRejectedError,
                    hint=f"{MAX_TOKEN_REPLAYS} freshly refreshed access tokens were refused too: check "
                    "the client id/secret and that the API base URL is right",
                )
            raise error

    def _endpoint(self, method: str, path: str) -> str:
        shown = path.split("?", 1)[0]
        if shown.startswith(self.base_url):
            shown = shown[len(self.base_url) :]
        return f"{method} {shown}"

    def _network_error(self, method: str, path: str, exc: Exception) -> TransientApiError:
        """No HTTP answer: say where to (``host:port``) and why, so it is clear what to check."""
        where = self.where(path)
        cause = network_cause(exc)
        if _is_connect_failure(exc):
            text = f"cannot connect to {where}: {cause}"
            hint = "Check the connection's host (API base URL) and that the server is up and reachable"
        elif isinstance(exc, requests.ReadTimeout):
            text = f"{where} did not answer within the timeout ({cause})"
            hint = "The server is slow or stuck; raise the connection's timeout extra if it is just slow"
        else:
            text = f"connection failed or dropped mid-response ({where}): {cause}"
            hint = None
        return TransientApiError(
            self._endpoint(method, path),
            None,
            None,
            self.redact(f"{text} ({type(exc).__name__})"),
            hint=hint,
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
