"""``OpenBankingHook``: the one place that talks to the Flinks Open Banking API.

The hook owns the connection, the OAuth lifecycle (client-credentials token for ``/providers``, the
``/authorize`` URL and its callback, code exchange, refresh grant, revoke) and the access-token
cache; it delegates sending to :mod:`~airflow_provider_openbanking.transport` (retries, error
mapping) and list walking to :mod:`~airflow_provider_openbanking.pagination`. Operators, the sensor,
the trigger and the CLI only call its methods.

Access tokens are cached per process and connection, shared by every hook instance and thread, and
refreshed under a lock (N threads -> one refresh) a little before they expire, or once when the
server answers 401 (not 602) -- also in the middle of a pagination, where the page is replayed.
Refresh tokens that the server rotates are written to the token store before they are used again.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from airflow_provider_openbanking.consent import ConsentStatus

from airflow_provider_openbanking.connection import CONN_TYPE, OpenBankingConfig, parse_connection
from airflow_provider_openbanking.exceptions import (
    ApiError,
    AuthorizationCallbackError,
    ConnectionConfigError,
    ConsentRequiredError,
    MalformedResponseError,
    NoDataError,
    OpenBankingError,
    TransientApiError,
)
from airflow_provider_openbanking.fdx import (
    DateLike,
    mask_account_numbers,
    parse_scopes,
    to_date_param,
    unwrap,
)
from airflow_provider_openbanking.pagination import PageStats, paginate
from airflow_provider_openbanking.ratelimit import client_key, rate_limiter_for
from airflow_provider_openbanking.token_store import (
    InMemoryTokenStore,
    TokenRecord,
    TokenStore,
    VariableTokenStore,
    fingerprint,
    now_iso,
)
from airflow_provider_openbanking.transport import RetryPolicy, Transport, path_segment

log = logging.getLogger(__name__)

RESULT_TYPES = ("lightweight", "details")
#: How long before expiry a cached access token is replaced (capped to a tenth of its lifetime, so
#: short-lived tokens are used for 90% of their life; a 401 from a clock skew is refreshed and replayed).
EXPIRY_SKEW_SECONDS = 30.0


@dataclass
class _AccessToken:
    token: str
    expires_at: float
    scope: str | None = None
    lifetime: float = 300.0

    def seconds_left(self) -> float:
        return self.expires_at - time.time()

    def __repr__(self) -> str:
        return f"_AccessToken(expires_in={self.seconds_left():.0f}s)"


class TokenResponse(dict):  # type: ignore[type-arg]
    """A token endpoint response: a plain dict whose repr hides the tokens."""

    _SECRET_KEYS = ("access_token", "refresh_token", "id_token")

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self._SECRET_KEYS else v) for k, v in self.items()}
        return f"TokenResponse({shown!r})"

    __str__ = __repr__


# Process-wide caches: every hook instance for the same connection shares one token and one lock.
_CACHE: dict[str, _AccessToken] = {}
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def clear_token_cache() -> None:
    """Forget every cached access token of this process (tests, and after a revoke)."""
    with _LOCKS_GUARD:
        _CACHE.clear()


def _mask(secret: str | None) -> None:
    if not secret:
        return
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
    except Exception:  # pragma: no cover - masking is defence in depth, never a failure
        pass


class _CachedTokenSource:
    """The transport's view of a cached token: ``get`` a valid one, ``invalidate`` a refused one."""

    def __init__(self, key: str, obtain: Callable[[], _AccessToken], skew: Callable[[_AccessToken], float]):
        self.key = key
        self.obtain = obtain
        self.skew = skew

    def current(self, min_ttl: float = 0.0) -> _AccessToken:
        cached = _CACHE.get(self.key)
        if cached is not None and cached.seconds_left() > self.skew(cached) + min_ttl:
            return cached
        with _lock_for(self.key):
            cached = _CACHE.get(self.key)  # another thread may have refreshed while we waited
            if cached is not None and cached.seconds_left() > self.skew(cached) + min_ttl:
                return cached
            fresh = self.obtain()
            _CACHE[self.key] = fresh
            return fresh

    def get(self) -> str:
        return self.current().token

    def invalidate(self, token: str) -> None:
        with _lock_for(self.key):
            cached = _CACHE.get(self.key)
            if cached is not None and cached.token == token:
                del _CACHE[self.key]


class OpenBankingHook(BaseHook):
    """Interact with the Flinks Open Banking API (FDX 5) as a Data Recipient.

    :param openbanking_conn_id: id of an ``openbanking`` connection (host = API base URL,
        login = client id, password = client secret, extras: ``refresh_token``, ``provider_id``,
        ``scopes``, ``redirect_uri``, ``token_path``, ``fdx_base_path``, ``timeout``,
        ``page_size``, ``verify``, ...).
    :param token_store: where rotated refresh tokens are kept; default from the connection's
        ``token_store`` extra (``variable``, the default, or ``memory``).
    :param retry: override the connection's retry bounds.
    """

    conn_name_attr = "openbanking_conn_id"
    default_conn_name = "openbanking_default"
    conn_type = CONN_TYPE
    hook_name = "Open Banking (Flinks / FDX)"

    def __init__(
        self,
        openbanking_conn_id: str = default_conn_name,
        *,
        token_store: TokenStore | None = None,
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
    ) -> None:
        super().__init__()
        self.openbanking_conn_id = openbanking_conn_id
        self._token_store = token_store
        self._retry = retry
        self._pool_size = pool_size
        self._secrets: set[str] = set()

    def __repr__(self) -> str:
        return f"OpenBankingHook(openbanking_conn_id={self.openbanking_conn_id!r})"

    # -- connection form (legacy path; Airflow 3.2+ reads get_provider_info first) -------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_openbanking.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    # -- configuration ---------------------------------------------------------------------------

    @cached_property
    def config(self) -> OpenBankingConfig:
        """The parsed connection; raises :class:`ConnectionConfigError` naming a bad field."""
        conn = self.get_connection(self.openbanking_conn_id)
        if conn.conn_type and conn.conn_type != CONN_TYPE:
            raise ConnectionConfigError(
                self.openbanking_conn_id, "conn_type", f"is {conn.conn_type!r}; expected {CONN_TYPE!r}"
            )
        cfg = parse_connection(conn)
        self._remember_secret(cfg.client_secret)
        self._remember_secret(cfg.refresh_token)
        return cfg

    @cached_property
    def transport(self) -> Transport:
        cfg = self.config
        retry = self._retry or RetryPolicy(
            max_attempts=cfg.max_attempts, max_elapsed=cfg.max_elapsed, initial_wait=cfg.retry_initial_wait
        )
        return Transport(
            cfg.base_url,
            timeout=cfg.timeout,
            verify=cfg.verify,
            retry=retry,
            redact=self.redact,
            pool_size=self._pool_size,
            conn_id=cfg.conn_id,
            max_response_bytes=cfg.max_response_bytes,
            rate_limiter=rate_limiter_for(
                client_key(cfg.base_url, cfg.client_id), cfg.max_requests_per_second
            ),
        )

    @cached_property
    def token_store(self) -> TokenStore:
        if self._token_store is not None:
            return self._token_store
        kind = self.config.token_store
        if kind == "variable":
            return VariableTokenStore()
        if kind == "memory":
            return InMemoryTokenStore()
        if "." in kind:
            from airflow.utils.module_loading import import_string

            store = import_string(kind)()
            if not isinstance(store, TokenStore):
                raise ConnectionConfigError(
                    self.openbanking_conn_id, "token_store", f"{kind} is not a TokenStore"
                )
            return store
        raise ConnectionConfigError(
            self.openbanking_conn_id,
            "token_store",
            f"must be 'variable', 'memory' or a dotted class path, got {kind!r}",
        )

    def get_conn(self) -> requests.Session:
        """The hook's keep-alive session (for callers that need raw access)."""
        return self.transport.session

    def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if "transport" in self.__dict__:
            self.transport.close()

    # -- secrets ---------------------------------------------------------------------------------

    def _remember_secret(self, secret: str | None) -> None:
        if secret and secret not in self._secrets:
            self._secrets.add(secret)
            _mask(secret)

    def redact(self, text: str) -> str:
        """Replace every secret this hook has seen by ``***`` (for error messages)."""
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    # -- token endpoint --------------------------------------------------------------------------

    def _token_request(self, body: dict[str, str]) -> TokenResponse:
        cfg = self.config
        payload = {"client_id": cfg.client_id, "client_secret": cfg.client_secret, **body}
        if cfg.token_request_format == "form":
            data = self.transport.request_json("POST", cfg.token_path, form_body=payload)
        else:
            data = self.transport.request_json("POST", cfg.token_path, json_body=payload)
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise ApiError(
                f"POST {cfg.token_path}",
                200,
                None,
                "token response has no access_token: is the token_path right?",
            )
        self._remember_secret(data["access_token"])
        self._remember_secret(data.get("refresh_token"))
        return TokenResponse(data)

    @staticmethod
    def _to_access_token(data: dict[str, Any]) -> _AccessToken:
        try:
            expires_in = float(data.get("expires_in") or 300)
        except (TypeError, ValueError):
            expires_in = 300.0
        return _AccessToken(data["access_token"], time.time() + expires_in, data.get("scope"), expires_in)

    @staticmethod
    def _skew(token: _AccessToken) -> float:
        return min(EXPIRY_SKEW_SECONDS, token.lifetime / 10)

    def _cache_key(self, kind: str) -> str:
        cfg = self.config
        return f"{kind}|{cfg.conn_id}|{cfg.base_url}|{cfg.client_id}"

    @cached_property
    def _customer_tokens(self) -> _CachedTokenSource:
        return _CachedTokenSource(self._cache_key("customer"), self._refresh_access_token, self._skew)

    @cached_property
    def _client_tokens(self) -> _CachedTokenSource:
        return _CachedTokenSource(self._cache_key("client"), self._client_credentials_token, self._skew)

    def _client_credentials_token(self) -> _AccessToken:
        data = self._token_request({"grant_type": "client_credentials"})
        return self._to_access_token(data)

    # -- refresh tokens and the store ------------------------------------------------------------

    def current_refresh_token(self) -> str:
        """The newest refresh token: the store's, unless the connection holds a newer consent."""
        cfg = self.config
        record = self.token_store.load(cfg.conn_id)
        conn_fp = fingerprint(cfg.refresh_token)
        if record is not None and (conn_fp is None or record.origin == conn_fp):
            self._remember_secret(record.refresh_token)
            return record.refresh_token
        if cfg.refresh_token:
            return cfg.refresh_token
        raise ConsentRequiredError(
            f"{self.openbanking_conn_id}",
            None,
            None,
            "no refresh token: the connection has no 'refresh_token' and the token store has none",
            hint=ConsentRequiredError.hint_for(cfg.conn_id),
        )

    def _store_refresh_token(self, token: str, *, refreshed: bool, scopes: str | None = None) -> None:
        cfg = self.config
        record = TokenRecord(
            refresh_token=token,
            origin=fingerprint(cfg.refresh_token),
            last_refresh_at=now_iso() if refreshed else None,
            scopes=scopes,
        )
        self.token_store.save(cfg.conn_id, record)

    def _refresh_access_token(self) -> _AccessToken:
        """Refresh grant. Persists a rotated refresh token before anything else uses it.

        A rejected refresh token is retried with the store's newest token when another process
        rotated it meanwhile; only when the store has nothing newer does the consent count as lost.
        """
        tried: set[str] = set()
        token = self.current_refresh_token()
        deadline = time.monotonic() + self.config.rotation_wait
        while True:
            tried.add(token)
            try:
                data = self._token_request({"grant_type": "refresh_token", "refresh_token": token})
            except ApiError as exc:
                if exc.code == "invalid_client":
                    raise self._client_error(exc) from None
                if exc.status not in (400, 401, 403):
                    raise
                newer = self._wait_for_newer_refresh_token(tried, deadline)
                if newer is not None:
                    log.info("Refresh token was rotated by another worker; retrying with the stored one")
                    token = newer
                    # Another worker made progress: give this one a fresh wait, so a burst of N
                    # workers rotating one after the other converges instead of timing out.
                    deadline = time.monotonic() + self.config.rotation_wait
                    continue
                raise exc.recast(
                    ConsentRequiredError,
                    api_message="the refresh token was rejected (revoked, lapsed after 30 idle days, or already rotated)",
                    hint=ConsentRequiredError.hint_for(self.openbanking_conn_id),
                ) from None
            new_refresh = data.get("refresh_token")
            self._store_refresh_token(new_refresh or token, refreshed=True, scopes=data.get("scope"))
            if new_refresh and new_refresh != token:
                log.info("Refresh token rotated; the new one is saved in the token store")
            return self._to_access_token(data)

    def _wait_for_newer_refresh_token(self, tried: set[str], deadline: float) -> str | None:
        while True:
            record = self.token_store.load(self.openbanking_conn_id)
            if record is not None and record.refresh_token not in tried:
                self._remember_secret(record.refresh_token)
                return record.refresh_token
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.25)

    def _client_error(self, exc: ApiError) -> ConnectionConfigError:
        return ConnectionConfigError(
            self.openbanking_conn_id,
            "login/password",
            f"were rejected by {exc.endpoint} (HTTP {exc.status}, {exc.code}): check the client id and secret",
        )

    # -- OAuth: seed steps 1, 2, 3, 5 ------------------------------------------------------------

    def get_access_token(self, min_ttl: float = 0.0) -> str:
        """A customer access token with at least ``min_ttl`` seconds left (cached or refreshed)."""
        return self._customer_tokens.current(min_ttl).token

    def refresh_access_token(self) -> str:
        """Force a refresh grant now (this is also what keeps an idle Flinks consent alive)."""
        return self._customer_tokens.current(min_ttl=float("inf")).token

    def consent_status(self, check_scopes: bool = False, **kwargs: Any) -> ConsentStatus:
        """Check this connection's consent without raising (see :func:`consent.consent_status`)."""
        from airflow_provider_openbanking.consent import consent_status

        return consent_status(self, check_scopes, **kwargs)

    def access_token_ttl(self) -> float:
        """Seconds the current customer access token has left (refreshing it if needed)."""
        return self._customer_tokens.current().seconds_left()

    def get_providers(self) -> list[dict[str, Any]]:
        """Seed step 1: the Data Providers this recipient is registered with."""
        try:
            data = self.transport.request_json("GET", "/api/v1/providers", token_source=self._client_tokens)
        except ApiError as exc:
            if exc.code == "invalid_client":
                raise self._client_error(exc) from None
            raise
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [])
        if not isinstance(data, list):
            raise ApiError("GET /api/v1/providers", 200, None, "expected a list of providers")
        return [p for p in data if isinstance(p, dict)]

    def authorization_url(
        self,
        state: str,
        *,
        scopes: Iterable[str] | str | None = None,
        provider_id: str | None = None,
        redirect_uri: str | None = None,
        correlation_id: str | None = None,
        code_challenge: str | None = None,
    ) -> str:
        """Seed step 2: the URL to send the customer's browser to.

        Scopes, provider and redirect URI default to the connection's. ``code_challenge`` adds
        PKCE (S256) for servers that ask for it (see :func:`pkce_pair`).
        """
        cfg = self.config
        redirect = redirect_uri or cfg.redirect_uri
        if not redirect:
            raise ConnectionConfigError(
                cfg.conn_id, "redirect_uri", "is empty: needed to build the /authorize URL"
            )
        provider = provider_id or cfg.provider_id
        try:
            scope_list = parse_scopes(
                list(scopes) if scopes is not None and not isinstance(scopes, str) else scopes
            )
        except ValueError as exc:
            raise ValueError(f"scopes {exc}") from None
        if scopes is None:
            scope_list = cfg.scopes
        query: dict[str, str] = {
            "response_type": "code",
            "client_id": cfg.client_id,
            "redirect_uri": redirect,
            "scope": " ".join(scope_list),
            "state": state,
        }
        if provider:
            query["provider_id"] = provider
        query["correlation_id"] = correlation_id or str(uuid.uuid4())
        if code_challenge:
            query["code_challenge"] = code_challenge
            query["code_challenge_method"] = "S256"
        from urllib.parse import quote

        return f"{cfg.base_url}/api/v1/authorize?{urlencode(query, quote_via=quote)}"

    def parse_callback(self, url: str, expected_state: str) -> str:
        """Return the authorization code from the redirect URL, or raise a clear error.

        ``error=…`` raises :class:`AuthorizationCallbackError` carrying ``error_description``;
        a missing or different ``state`` is rejected (it would be a forged or crossed callback).
        """
        query = parse_qs(urlsplit(url).query)

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        state = one("state")
        error = one("error")
        if error:
            description = one("error_description") or ""
            if state != expected_state:
                raise AuthorizationCallbackError(
                    f"Authorization failed ({error}) and the callback's state does not match the request",
                    error=error,
                    description=description,
                )
            raise AuthorizationCallbackError(
                f"Authorization failed: {error}" + (f": {description}" if description else ""),
                error=error,
                description=description,
            )
        if state != expected_state:
            raise AuthorizationCallbackError(
                "The callback's state does not match the one sent to /authorize: refusing it "
                "(a stale, crossed or forged callback)"
            )
        code = one("code")
        if not code:
            raise AuthorizationCallbackError("The callback carries neither a code nor an error")
        self._remember_secret(code)
        return code

    def exchange_code(
        self, code: str, redirect_uri: str | None = None, *, code_verifier: str | None = None
    ) -> TokenResponse:
        """Seed step 3: trade the code for tokens; the refresh token goes to the token store."""
        cfg = self.config
        self._remember_secret(code)
        redirect = redirect_uri or cfg.redirect_uri
        if not redirect:
            raise ConnectionConfigError(cfg.conn_id, "redirect_uri", "is empty: needed for the code exchange")
        body = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
        if code_verifier:
            body["code_verifier"] = code_verifier
        try:
            data = self._token_request(body)
        except ApiError as exc:
            if exc.code == "invalid_client":
                raise self._client_error(exc) from None
            if exc.status in (400, 401, 403):
                raise exc.recast(
                    ApiError,
                    hint="The code was refused: codes are single-use and short-lived, and redirect_uri "
                    "must equal the one used at /authorize. Start the authorization again",
                ) from None
            raise
        refresh = data.get("refresh_token")
        if refresh:
            self._store_refresh_token(refresh, refreshed=False, scopes=data.get("scope"))
        with _lock_for(self._customer_tokens.key):
            _CACHE[self._customer_tokens.key] = self._to_access_token(data)
        return data

    def revoke(self) -> None:
        """Revoke the customer's consent at the server and forget the stored token."""
        path = "/api/v1/revoke"
        try:
            self.transport.request_json("DELETE", path, token_source=self._customer_tokens)
        finally:
            with _lock_for(self._customer_tokens.key):
                _CACHE.pop(self._customer_tokens.key, None)
        try:
            self.token_store.delete(self.openbanking_conn_id)
        except Exception:
            log.info("No stored refresh token to delete for %s", self.openbanking_conn_id)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: client credentials, then (if there is one) the customer consent."""
        try:
            providers = self.get_providers()
            message = f"Client credentials OK ({len(providers)} data provider(s))"
            if self.config.refresh_token or self.token_store.load(self.openbanking_conn_id):
                ttl = self.access_token_ttl()
                message += f"; customer consent OK (access token valid for {ttl:.0f}s)"
            else:
                message += "; no customer consent yet (run `airflow-openbanking authorize`)"
            return True, message
        except (OpenBankingError, requests.RequestException) as exc:
            return False, self.redact(str(exc))

    # -- FDX data: seed step 4 -------------------------------------------------------------------

    def _fdx_path(self, *segments: Any) -> str:
        return self.config.fdx_base_path + "".join(f"/{path_segment(s)}" for s in segments)

    def _get(self, *segments: Any, params: dict[str, Any] | None = None) -> Any:
        return self.transport.request_json(
            "GET", self._fdx_path(*segments), params=params, token_source=self._customer_tokens
        )

    def _iter(
        self,
        key: str,
        *segments: Any,
        params: dict[str, Any] | None = None,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[Any]:
        path = self._fdx_path(*segments)
        query = dict(params or {})
        if self.config.page_size and "limit" not in query:
            query["limit"] = self.config.page_size

        def fetch(page_params: dict[str, str]) -> Any:
            try:
                return self.transport.request_json(
                    "GET", path, params=page_params, token_source=self._customer_tokens
                )
            except NoDataError:
                return None

        yield from paginate(fetch, key, endpoint=f"GET {path}", params=query, stats=stats, on_page=on_page)

    def _unwrap_all(self, items: Iterator[Any], endpoint: str) -> Iterator[dict[str, Any]]:
        for item in items:
            try:
                yield unwrap(item)
            except ValueError as exc:
                raise MalformedResponseError(endpoint, 200, None, f"bad record: {exc}") from None

    def iter_accounts(
        self,
        result_type: str = "lightweight",
        account_ids: Iterable[str] | None = None,
        *,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The consent's accounts (``lightweight`` or ``details``), unwrapped, page by page."""
        if result_type not in RESULT_TYPES:
            raise ValueError(f"result_type must be one of {', '.join(RESULT_TYPES)}, got {result_type!r}")
        params: dict[str, Any] = {"resultType": result_type}
        if account_ids is not None:
            ids = [str(a) for a in account_ids]
            if not ids:
                return
            params["accountIds"] = ",".join(ids)
        items = self._iter("accounts", "accounts", params=params, stats=stats, on_page=on_page)
        yield from self._unwrap_all(items, "GET /accounts")

    def get_account(self, account_id: str) -> dict[str, Any]:
        """One account with details (balances, holdings for investment accounts), unwrapped."""
        data = self._get("accounts", account_id)
        try:
            return unwrap(data)
        except ValueError as exc:
            raise MalformedResponseError(
                "GET /accounts/{accountId}", 200, None, f"bad record: {exc}"
            ) from None

    def _window(self, start_time: DateLike | None, end_time: DateLike | None) -> dict[str, Any]:
        start = to_date_param(start_time, "start_time")
        end = to_date_param(end_time, "end_time")
        if start and end and start > end:
            raise ValueError(f"start_time {start} is after end_time {end}")
        return {"startTime": start, "endTime": end}

    def iter_transactions(
        self,
        account_id: str,
        start_time: DateLike | None = None,
        end_time: DateLike | None = None,
        *,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Transactions of one account posted in [start_time, end_time] (pending ones included)."""
        params = self._window(start_time, end_time)
        items = self._iter(
            "transactions",
            "accounts",
            account_id,
            "transactions",
            params=params,
            stats=stats,
            on_page=on_page,
        )
        yield from self._unwrap_all(items, "GET /accounts/{accountId}/transactions")

    def iter_statements(
        self,
        account_id: str,
        start_time: DateLike | None = None,
        end_time: DateLike | None = None,
        *,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Statement descriptors of one account in the window."""
        params = self._window(start_time, end_time)
        yield from self._iter(
            "statements", "accounts", account_id, "statements", params=params, stats=stats, on_page=on_page
        )

    def download_statement(
        self, account_id: str, statement_id: str, accept: str = "application/pdf", *, chunk_size: int = 65536
    ) -> Iterator[bytes]:
        """Stream a statement file in chunks (follows a 302; waits out code 1300 "processing").

        The request is sent, and any error raised, when the iterator is first advanced.
        """
        path = self._fdx_path("accounts", account_id, "statements", statement_id)
        resp = self.transport.request_stream(
            "GET", path, headers={"Accept": accept}, token_source=self._customer_tokens
        )
        try:
            yield from resp.iter_content(chunk_size=chunk_size)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientApiError(
                f"GET {path}", resp.status_code, None, f"download cut off: {type(exc).__name__}"
            ) from None
        finally:
            resp.close()

    def get_account_contact(self, account_id: str) -> dict[str, Any]:
        """Holders, emails, addresses and telephones of one account."""
        data = self._get("accounts", account_id, "contact")
        return data if isinstance(data, dict) else {}

    def iter_payment_networks(
        self,
        account_id: str,
        *,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Payment networks (routing and account identifiers) of one account."""
        yield from self._iter(
            "paymentNetworks", "accounts", account_id, "payment-networks", stats=stats, on_page=on_page
        )

    def get_customer(self) -> dict[str, Any]:
        """The customer who gave consent (``/customers/current``)."""
        data = self._get("customers", "current")
        return data if isinstance(data, dict) else {}

    def iter_holdings(
        self,
        account_ids: Iterable[str] | None = None,
        *,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Holdings of the investment accounts, each tagged with its ``accountId``.

        ``stats``/``on_page`` count the pages of accounts walked (as in :meth:`iter_accounts`).
        """
        for account in self.iter_accounts("details", account_ids, stats=stats, on_page=on_page):
            if account.get("accountCategory") != "INVESTMENT_ACCOUNT" and "holdings" not in account:
                continue
            for holding in account.get("holdings") or []:
                if isinstance(holding, dict):
                    yield {"accountId": account.get("accountId"), **holding}


def pkce_pair() -> tuple[str, str]:
    """Return ``(code_verifier, code_challenge)`` for PKCE S256 (RFC 7636)."""
    import secrets

    verifier = secrets.token_urlsafe(64)[:96]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


__all__ = ["OpenBankingHook", "TokenResponse", "clear_token_cache", "mask_account_numbers", "pkce_pair"]
