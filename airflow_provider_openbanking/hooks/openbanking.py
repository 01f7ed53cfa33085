"""``OpenBankingHook``: the one place that talks to the Flinks Open Banking API.

The hook owns the connection, the OAuth lifecycle (client-credentials token for ``/providers``, the
``/authorize`` URL and its callback, code exchange, refresh grant, revoke) and the access-token
cache; it delegates sending to :mod:`~airflow_provider_openbanking.transport` (retries, error
mapping), list walking to :mod:`~airflow_provider_openbanking.pagination` and keeping consents to
:mod:`~airflow_provider_openbanking.consents`. Operators, the sensor, the trigger and the CLI only
call its methods.

A connection is one Data Recipient *client*; a hook acts for one of its *consents*
(``consent_id``, default ``"default"`` = the connection's own ``refresh_token`` extra).
:meth:`OpenBankingHook.for_consent` gives a hook of another consent that shares the configuration,
the HTTP session and the client-credentials token. Every customer-token operation is per
(connection, consent); two consents never share an access or refresh token.

Access tokens are shared at two levels. In a process: one cache entry per (connection, consent),
refreshed under a lock (N threads -> one refresh) a little before expiry, or once when the server
answers 401 (not 602) -- also in the middle of a pagination, where the page is replayed. Across
processes: the consent store keeps the current access token with its expiry, and a *refresh
lease* in the store lets one process make the refresh grant while the others wait for the token
it stores -- one refresh grant per consent per access-token lifetime, however many task processes
use the consent. Refresh tokens that the server rotates are written to the store (compare-and-swap)
before they are used again.
"""

from __future__ import annotations

import base64
import collections
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
    from airflow_provider_openbanking.consents.health import ConsentStatus

from airflow_provider_openbanking.connection import CONN_TYPE, OpenBankingConfig, parse_connection
from airflow_provider_openbanking.consents import masking
from airflow_provider_openbanking.consents._airflow import get_connection
from airflow_provider_openbanking.consents.factory import build_store
from airflow_provider_openbanking.consents.record import (
    ACTIVE,
    DEFAULT_CONSENT_ID,
    NEEDS_REAUTHORIZATION,
    REVOKED,
    ConsentRecord,
    fingerprint,
    now_iso,
    validate_consent_id,
)
from airflow_provider_openbanking.consents.store import ConsentStore, ConsentStoreError
from airflow_provider_openbanking.exceptions import (
    ApiError,
    AuthorizationCallbackError,
    ConnectionConfigError,
    ConnectionNotFoundError,
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
from airflow_provider_openbanking.filtering import (
    STATEMENT_DATE_FIELDS,
    TRANSACTION_DATE_FIELDS,
    keep_accounts,
    keep_in_window,
)
from airflow_provider_openbanking.pagination import PageStats, paginate
from airflow_provider_openbanking.ratelimit import client_key, rate_limiter_for
from airflow_provider_openbanking.transport import RetryPolicy, Transport, path_segment

log = logging.getLogger(__name__)

RESULT_TYPES = ("lightweight", "details")
#: How long before expiry a cached access token is replaced (capped to a tenth of its lifetime, so
#: short-lived tokens are used for 90% of their life; a 401 from a clock skew is refreshed and replayed).
EXPIRY_SKEW_SECONDS = 30.0
#: Poll interval while another process holds a consent's refresh lease.
LEASE_POLL_SECONDS = 0.1


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


# Process-wide caches: every hook instance for the same (connection, consent) shares one token
# and one lock.
_CACHE: dict[str, _AccessToken] = {}
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
#: Fingerprints of access tokens the server refused (401): never taken from the store again.
_REJECTED: set[str] = set()
#: When this process last had a customer access token refused, per cache key: a token another
#: process stored is only taken when it was minted after that (a server may kill tokens early).
_INVALIDATED_AT: dict[str, float] = {}
#: Cache keys whose next token must be minted by this process (the replay after a 401 must use
#: a token fresh from the server, not one another process stored a moment ago).
_MUST_MINT: set[str] = set()


def _lock_for(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def clear_token_cache() -> None:
    """Forget every cached access token of this process (tests, and after a revoke)."""
    with _LOCKS_GUARD:
        _CACHE.clear()
        _REJECTED.clear()
        _INVALIDATED_AT.clear()
        _MUST_MINT.clear()


#: Airflow's log masker skips values shorter than this (and says so).
_MIN_MASKED_LENGTH = 5
#: Where Airflow's two copies of the masker log "Skipping masking for a secret as it's too short".
_MASKER_LOGGERS = (
    "airflow.sdk._shared.secrets_masker.secrets_masker",
    "airflow._shared.secrets_masker.secrets_masker",
)


class _ShortValueNoise(logging.Filter):
    """Drops the masker's "too short" warning while a connection is read.

    Airflow registers *every* extra value with the masker when it reads a connection and warns
    about the first short one -- in practice ``provider_id`` "1000", which is no secret and which it
    would never mask (its key is not a sensitive name). The hook warns itself, naming the field,
    when a value that *is* a secret is too short to be masked (see ``_remember_secret``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "too short" not in record.getMessage()


def _read_connection(get: Callable[[str], Any], conn_id: str) -> Any:
    """``get(conn_id)`` without the masker's noise; an unknown id is one clear sentence."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    noise = _ShortValueNoise()
    loggers = [logging.getLogger(name) for name in _MASKER_LOGGERS]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        return get(conn_id)
    except AirflowNotFoundException:
        raise ConnectionNotFoundError(conn_id) from None
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


def _mask(secret: str | None) -> None:
    """Register a connection-level secret (the client secret) with Airflow's masker."""
    if not secret:
        return
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
    except Exception:  # pragma: no cover - masking is defence in depth, never a failure
        pass


class _CachedTokenSource:
    """The transport's view of a cached token: ``get`` a valid one, ``invalidate`` a refused one."""

    def __init__(
        self,
        key: str,
        obtain: Callable[[float], _AccessToken],
        skew: Callable[[_AccessToken], float],
        on_invalidate: Callable[[str], None] | None = None,
    ):
        self.key = key
        self.obtain = obtain
        self.skew = skew
        self.on_invalidate = on_invalidate

    def current(self, min_ttl: float = 0.0) -> _AccessToken:
        cached = _CACHE.get(self.key)
        if cached is not None and cached.seconds_left() > self.skew(cached) + min_ttl:
            return cached
        with _lock_for(self.key):
            cached = _CACHE.get(self.key)  # another thread may have refreshed while we waited
            if cached is not None and cached.seconds_left() > self.skew(cached) + min_ttl:
                return cached
            fresh = self.obtain(min_ttl)
            _CACHE[self.key] = fresh
            return fresh

    def get(self) -> str:
        return self.current().token

    def invalidate(self, token: str) -> None:
        # Under the lock, and the refused token marked before it leaves the cache: otherwise a
        # thread that misses the cache in between could take the same token back from the
        # consent store, cache it, and hand it to this thread's replay.
        with _lock_for(self.key):
            if self.on_invalidate is not None:
                self.on_invalidate(token)
            cached = _CACHE.get(self.key)
            if cached is not None and cached.token == token:
                del _CACHE[self.key]


class OpenBankingHook(BaseHook):
    """Interact with the Flinks Open Banking API (FDX 5) as a Data Recipient, for one consent.

    :param openbanking_conn_id: id of an ``openbanking`` connection (host = API base URL,
        login = client id, password = client secret, extras: ``refresh_token``, ``provider_id``,
        ``scopes``, ``redirect_uri``, ``consent_store``, ``consent_store_conn_id``, ``timeout``,
        ``page_size``, ``verify``, ...).
    :param consent_id: the consent this hook acts for (default ``"default"``: the connection's
        ``refresh_token`` extra, or what ``airflow-openbanking authorize`` stored).
    :param consent_store: where consents live; default from the connection's ``consent_store``
        extra (``variable``, the default; ``sql``; ``memory``; a dotted class path).
        ``token_store`` is the 0.x name of this argument.
    :param retry: override the connection's retry bounds.
    """

    conn_name_attr = "openbanking_conn_id"
    default_conn_name = "openbanking_default"
    conn_type = CONN_TYPE
    hook_name = "Open Banking (Flinks / FDX)"

    def __init__(
        self,
        openbanking_conn_id: str = default_conn_name,
        consent_id: str | None = None,
        *,
        consent_store: ConsentStore | None = None,
        token_store: ConsentStore | None = None,
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
    ) -> None:
        super().__init__()
        self.openbanking_conn_id = openbanking_conn_id
        self.consent_id = validate_consent_id(DEFAULT_CONSENT_ID if consent_id is None else consent_id)
        self._consent_store = consent_store if consent_store is not None else token_store
        self._retry = retry
        self._pool_size = pool_size
        self._secrets: set[str] = set()
        self._owns_transport = True
        self._lease_owner = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"OpenBankingHook(openbanking_conn_id={self.openbanking_conn_id!r}, consent_id={self.consent_id!r})"

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
        """The parsed connection; raises :class:`ConnectionConfigError` naming a bad field, or
        :class:`ConnectionNotFoundError` (one sentence: how to create it) for an unknown id. Both
        fail a task at its first try.

        The connection is looked up wherever Airflow keeps it (in a task through the Task SDK;
        elsewhere, e.g. the CLI, through secrets backends, ``AIRFLOW_CONN_*`` and the metadata DB).
        """
        conn = _read_connection(get_connection, self.openbanking_conn_id)
        if conn.conn_type and conn.conn_type != CONN_TYPE:
            raise ConnectionConfigError(
                self.openbanking_conn_id, "conn_type", f"is {conn.conn_type!r}; expected {CONN_TYPE!r}"
            )
        cfg = parse_connection(conn)
        self._remember_secret(cfg.client_secret, connection_level=True, field="password")
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
    def consent_store(self) -> ConsentStore:
        """The :class:`~airflow_provider_openbanking.consents.ConsentStore` of the connection."""
        if self._consent_store is not None:
            return self._consent_store
        cfg = self.config
        try:
            return build_store(
                cfg.consent_store,
                sql_conn_id=cfg.consent_store_conn_id,
                fernet_conn_id=cfg.consent_store_fernet_conn_id,
            )
        except ConsentStoreError as exc:
            field = "consent_store_conn_id" if cfg.consent_store == "sql" else "consent_store"
            raise ConnectionConfigError(self.openbanking_conn_id, field, str(exc)) from None

    @property
    def token_store(self) -> ConsentStore:
        """The 0.x name of :attr:`consent_store`."""
        return self.consent_store

    def for_consent(self, consent_id: str) -> OpenBankingHook:
        """A hook of the same connection for ``consent_id``, sharing the configuration, the consent
        store, the HTTP session and the client-credentials token (cheap: no lookup, no new pool)."""
        other = OpenBankingHook(
            self.openbanking_conn_id,
            consent_id,
            consent_store=self.consent_store,
            retry=self._retry,
            pool_size=self._pool_size,
        )
        other.__dict__["config"] = self.config
        other._secrets = self._secrets  # connection-level secrets (the client secret)
        other.__dict__["transport"] = self.transport
        other.__dict__["_client_tokens"] = self._client_tokens
        other._owns_transport = False
        return other

    def consent_ids(self) -> list[str]:
        """Every consent of the connection, sorted: the store's ids, plus ``default`` when the
        connection has a ``refresh_token`` extra."""
        ids = set(self.consent_store.consent_ids(self.openbanking_conn_id))
        if self.config.refresh_token:
            ids.add(DEFAULT_CONSENT_ID)
        return sorted(ids)

    def get_conn(self) -> requests.Session:
        """The hook's keep-alive session (for callers that need raw access)."""
        return self.transport.session

    def close(self) -> None:
        """Close the HTTP session (idempotent; a hook from :meth:`for_consent` leaves it to its parent)."""
        if "transport" in self.__dict__ and self._owns_transport:
            self.transport.close()

    # -- secrets ---------------------------------------------------------------------------------

    def _remember_secret(
        self, secret: str | None, *, connection_level: bool = False, field: str | None = None
    ) -> None:
        """Keep ``secret`` out of logs and messages. Customer tokens go to the process-wide
        :data:`~airflow_provider_openbanking.consents.masking.REDACTOR` (O(1) per token);
        connection-level secrets (one per connection) to Airflow's masker as well.

        Only secrets come here (never ids such as ``provider_id``). A connection-level secret too
        short for Airflow's masker is still redacted by the hook, and a warning names its ``field``.
        """
        if not secret:
            return
        masking.REDACTOR.add(secret)
        if connection_level and secret not in self._secrets:
            self._secrets.add(secret)
            if len(secret) >= _MIN_MASKED_LENGTH:
                _mask(secret)
            elif field:
                log.warning(
                    "Connection %r: %s is shorter than %d characters, too short for Airflow to mask in logs",
                    self.openbanking_conn_id,
                    field,
                    _MIN_MASKED_LENGTH,
                )
            masking.install()

    def redact(self, text: str) -> str:
        """Replace every secret this process has seen by ``***`` (for error messages)."""
        text = masking.REDACTOR.redact(text)
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
        key = f"{kind}|{cfg.conn_id}|{cfg.base_url}|{cfg.client_id}"
        return f"{key}|{self.consent_id}" if kind == "customer" else key

    @cached_property
    def _customer_tokens(self) -> _CachedTokenSource:
        return _CachedTokenSource(
            self._cache_key("customer"), self._obtain_customer_token, self._skew, self._forget_access_token
        )

    @cached_property
    def _client_tokens(self) -> _CachedTokenSource:
        return _CachedTokenSource(self._cache_key("client"), self._client_credentials_token, self._skew)

    def _client_credentials_token(self, min_ttl: float = 0.0) -> _AccessToken:
        data = self._token_request({"grant_type": "client_credentials"})
        return self._to_access_token(data)

    # -- the consent's record ---------------------------------------------------------------------

    def _load_record(self) -> ConsentRecord | None:
        record = self.consent_store.load(self.openbanking_conn_id, self.consent_id)
        if record is not None:
            self._remember_secret(record.refresh_token)
            self._remember_secret(record.access_token)
        return record

    def _chain(self, record: ConsentRecord | None) -> ConsentRecord | None:
        """The stored record when it belongs to the consent's current chain, else None.

        For ``default``: a stored record descends from the connection's ``refresh_token`` extra
        (same origin fingerprint); a different token put into the connection (a new consent) wins.
        """
        if record is None:
            return None
        if self.consent_id != DEFAULT_CONSENT_ID:
            return record
        conn_fp = fingerprint(self.config.refresh_token)
        return record if conn_fp is None or record.origin == conn_fp else None

    def _template(self) -> ConsentRecord | None:
        """The record of a ``default`` consent that only the connection knows about yet."""
        cfg = self.config
        if self.consent_id != DEFAULT_CONSENT_ID or not cfg.refresh_token:
            return None
        return ConsentRecord(
            conn_id=cfg.conn_id,
            consent_id=DEFAULT_CONSENT_ID,
            refresh_token=cfg.refresh_token,
            origin=fingerprint(cfg.refresh_token),
            provider_id=cfg.provider_id,
        )

    def _no_consent(self, detail: str) -> ConsentRequiredError:
        where = "" if self.consent_id == DEFAULT_CONSENT_ID else f" consent {self.consent_id!r}"
        return ConsentRequiredError(
            f"{self.openbanking_conn_id}{where}",
            None,
            None,
            detail,
            hint=self._reauthorize_hint(),
        )

    def _reauthorize_hint(self) -> str:
        hint = ConsentRequiredError.hint_for(self.openbanking_conn_id)
        if self.consent_id == DEFAULT_CONSENT_ID:
            return hint
        option = f"--conn-id {self.openbanking_conn_id}"
        return hint.replace(option, f"{option} --consent-id {self.consent_id}", 1)

    def _token_of(self, record: ConsentRecord | None) -> str:
        """The refresh token to use: the chain's stored one, else the connection's (``default``)."""
        chain = self._chain(record)
        if chain is not None:
            if chain.state == REVOKED or not chain.refresh_token:
                raise self._no_consent(
                    f"the consent was revoked{' at ' + chain.updated_at if chain.updated_at else ''}: "
                    "the customer must authorize again"
                )
            return chain.refresh_token
        if self.consent_id == DEFAULT_CONSENT_ID and self.config.refresh_token:
            return self.config.refresh_token
        if self.consent_id == DEFAULT_CONSENT_ID:
            detail = "no refresh token: the connection has no 'refresh_token' and the consent store has none"
        else:
            detail = (
                f"no consent {self.consent_id!r} in the consent store: import it "
                f"(`airflow-openbanking consents import --conn-id {self.openbanking_conn_id} FILE`) "
                "or authorize it"
            )
        raise self._no_consent(detail)

    def stored_consent(self) -> ConsentRecord | None:
        """This consent's stored record, when it belongs to the current chain (no secret in repr)."""
        return self._chain(self._load_record())

    def current_refresh_token(self) -> str:
        """The newest refresh token of this consent (the store's, unless the connection holds a
        newer ``default`` consent)."""
        return self._token_of(self._load_record())

    def _usable(self, record: ConsentRecord | None, min_ttl: float) -> _AccessToken | None:
        """The access token stored in ``record`` if it still has ``min_ttl`` (+ skew) seconds."""
        record = self._chain(record)
        if record is None or not record.access_token or record.state != ACTIVE:
            return None
        if fingerprint(record.access_token) in _REJECTED:
            return None
        token = _AccessToken(
            record.access_token,
            record.access_token_expires_at or 0.0,
            record.access_token_scope,
            record.access_token_lifetime or 300.0,
        )
        if token.expires_at - token.lifetime <= _INVALIDATED_AT.get(self._customer_tokens.key, 0.0):
            return None  # minted before a token of this consent was refused here: mint a new one
        if token.seconds_left() > self._skew(token) + min_ttl:
            return token
        return None

    def _forget_access_token(self, token: str) -> None:
        """The server refused ``token`` (401): never take it (or an older one) from the store
        again, and drop it from the store so that other processes do not try it either."""
        _REJECTED.add(fingerprint(token) or "")
        _INVALIDATED_AT[self._customer_tokens.key] = time.time()
        _MUST_MINT.add(self._customer_tokens.key)

        def change(current: ConsentRecord | None) -> ConsentRecord | None:
            if current is None or current.access_token != token:
                return None
            return current.replace(access_token=None, access_token_expires_at=None)

        try:
            self.consent_store.update(self.openbanking_conn_id, self.consent_id, change)
        except Exception as exc:  # the replay goes on with a new token either way
            log.warning("Could not drop a refused access token from the consent store: %s", exc)

    def _lease_seconds(self) -> float:
        return self.config.timeout + 5.0

    def _obtain_customer_token(self, min_ttl: float = 0.0) -> _AccessToken:
        """An access token for this consent: the store's when another process refreshed it, else
        one refresh grant made under the consent's lease (see the module docstring)."""
        store, conn_id = self.consent_store, self.openbanking_conn_id
        if self._customer_tokens.key in _MUST_MINT:  # a replay after a 401: a grant of our own
            _MUST_MINT.discard(self._customer_tokens.key)
            min_ttl = float("inf")
        record = self._load_record()
        shared = self._usable(record, min_ttl)
        if shared is not None:
            return shared
        self._token_of(record)  # no consent at all: fail now, without a lease
        template = self._template()
        held = False
        deadline = time.monotonic() + self._lease_seconds()
        while True:
            try:
                held, record = store.acquire_lease(
                    conn_id, self.consent_id, self._lease_owner, self._lease_seconds(), template=template
                )
            except ConsentStoreError:
                raise
            shared = self._usable(record, min_ttl)
            if shared is not None:
                if held:
                    store.release_lease(conn_id, self.consent_id, self._lease_owner)
                return shared
            if held or record is None:
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "Consent %r of %s: another process held the refresh lease for %.0fs; refreshing anyway",
                    self.consent_id,
                    conn_id,
                    self._lease_seconds(),
                )
                break
            time.sleep(LEASE_POLL_SECONDS)
        try:
            return self._refresh_access_token(record, min_ttl)
        finally:
            if held:
                store.release_lease(conn_id, self.consent_id, self._lease_owner)

    def _save_grant(self, used: str, data: dict[str, Any], access: _AccessToken) -> None:
        """Write the grant's outcome (rotated refresh token, access token) by compare-and-swap."""
        cfg = self.config
        new_refresh = data.get("refresh_token") or used
        now = now_iso()

        def change(current: ConsentRecord | None) -> ConsentRecord | None:
            chain = self._chain(current)
            if chain is not None and chain.refresh_token not in (used, new_refresh) and chain.state == ACTIVE:
                # Someone stored another token meanwhile (an import, another chain): keep theirs,
                # share only our access token if it outlives theirs.
                if (chain.access_token_expires_at or 0) >= access.expires_at:
                    return None
                return chain.replace(
                    access_token=access.token,
                    access_token_expires_at=access.expires_at,
                    access_token_lifetime=access.lifetime,
                    access_token_scope=access.scope,
                )
            base = chain or current or self._template() or ConsentRecord(cfg.conn_id, self.consent_id)
            origin = base.origin
            if self.consent_id == DEFAULT_CONSENT_ID and cfg.refresh_token:
                origin = fingerprint(cfg.refresh_token)
            elif origin is None:
                origin = fingerprint(used)
            lease_owner = base.lease_owner if base.lease_owner != self._lease_owner else None
            return base.replace(
                refresh_token=new_refresh,
                origin=origin,
                state=ACTIVE,
                scopes=data.get("scope") or base.scopes,
                updated_at=now,
                last_refresh_at=now,
                access_token=access.token,
                access_token_expires_at=access.expires_at,
                access_token_lifetime=access.lifetime,
                access_token_scope=access.scope,
                lease_owner=lease_owner,
                lease_until=base.lease_until if lease_owner else None,
                version=current.version if current is not None else 0,
            )

        self.consent_store.update(cfg.conn_id, self.consent_id, change)

    def _refresh_access_token(
        self, record: ConsentRecord | None = None, min_ttl: float = 0.0
    ) -> _AccessToken:
        """Refresh grant. Persists a rotated refresh token before anything else uses it.

        A rejected refresh token is retried with the store's newest token when another process
        rotated it meanwhile (or its access token is used, when it stored one); only when the store
        has nothing newer does the consent count as lost (state ``needs_reauthorization``).
        """
        tried: set[str] = set()
        record = record if record is not None else self._load_record()
        token = self._token_of(record)
        stale = record.access_token if record is not None else None
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
                newer, shared = self._wait_for_newer_refresh_token(tried, deadline, stale, min_ttl)
                if shared is not None:
                    log.info(
                        "Consent %r: another worker refreshed it; using its access token", self.consent_id
                    )
                    return shared
                if newer is not None:
                    log.info("Refresh token was rotated by another worker; retrying with the stored one")
                    token = newer
                    # Another worker made progress: give this one a fresh wait, so a burst of N
                    # workers rotating one after the other converges instead of timing out.
                    deadline = time.monotonic() + self.config.rotation_wait
                    continue
                self._mark_rejected(token, exc.code or f"http_{exc.status}")
                raise exc.recast(
                    ConsentRequiredError,
                    api_message="the refresh token was rejected (revoked, lapsed after 30 idle days, or already rotated)",
                    hint=self._reauthorize_hint(),
                ) from None
            access = self._to_access_token(data)
            self._save_grant(token, data, access)
            new_refresh = data.get("refresh_token")
            if new_refresh and new_refresh != token:
                log.info("Refresh token rotated; the new one is saved in the consent store")
            return access

    def _mark_rejected(self, token: str, code: str) -> None:
        """The bank refused the consent's refresh token: the customer must authorize again."""

        def change(current: ConsentRecord | None) -> ConsentRecord | None:
            chain = self._chain(current)
            if chain is None or chain.refresh_token != token:
                return None
            return chain.replace(state=NEEDS_REAUTHORIZATION, last_error=code, access_token=None)

        try:
            self.consent_store.update(self.openbanking_conn_id, self.consent_id, change)
        except Exception:  # the refusal is what the caller must hear about
            log.warning("Could not mark consent %r as needing re-authorization", self.consent_id)

    def _wait_for_newer_refresh_token(
        self, tried: set[str], deadline: float, stale: str | None = None, min_ttl: float = 0.0
    ) -> tuple[str | None, _AccessToken | None]:
        """A refresh token another process stored since (or the access token it got with it)."""
        while True:
            record = self._chain(self._load_record())
            shared = self._usable(record, min_ttl)
            if shared is not None and shared.token != stale:
                return None, shared
            if record is not None and record.refresh_token and record.refresh_token not in tried:
                return record.refresh_token, None
            if time.monotonic() >= deadline:
                return None, None
            time.sleep(0.25)

    def _client_error(self, exc: ApiError) -> ConnectionConfigError:
        return ConnectionConfigError(
            self.openbanking_conn_id,
            "login/password",
            f"were rejected by {exc.endpoint} (HTTP {exc.status}, {exc.code}): check the client id and secret",
        )

    # -- stamps ------------------------------------------------------------------------------------

    def record_success(self) -> None:
        """Stamp the consent's ``last_success_at`` (a data call for it succeeded)."""
        self._stamp(last_success_at=now_iso())

    def record_error(self, code: str) -> None:
        """Stamp the consent's ``last_error`` with ``code`` (no secret: an error code)."""
        self._stamp(last_error=str(code)[:200])

    def _stamp(self, **fields: Any) -> None:
        try:
            if self.consent_store.stamp(self.openbanking_conn_id, self.consent_id, **fields) is None:
                template = self._template()
                if template is not None:  # the default consent, not stored yet
                    self.consent_store.compare_and_swap(template.replace(**fields), 0)
        except ConsentStoreError as exc:
            log.warning(
                "Could not stamp consent %r of %s: %s", self.consent_id, self.openbanking_conn_id, exc
            )

    # -- OAuth: seed steps 1, 2, 3, 5 ------------------------------------------------------------

    def get_access_token(self, min_ttl: float = 0.0) -> str:
        """A customer access token with at least ``min_ttl`` seconds left (cached or refreshed)."""
        return self._customer_tokens.current(min_ttl).token

    def refresh_access_token(self) -> str:
        """Force a refresh grant now (this is also what keeps an idle Flinks consent alive)."""
        return self._customer_tokens.current(min_ttl=float("inf")).token

    def consent_status(self, check_scopes: bool = False, **kwargs: Any) -> ConsentStatus:
        """Check this consent without raising (see :func:`consents.health.consent_status`)."""
        from airflow_provider_openbanking.consents.health import consent_status

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
        self,
        code: str,
        redirect_uri: str | None = None,
        *,
        code_verifier: str | None = None,
        consent_id: str | None = None,
    ) -> TokenResponse:
        """Seed step 3: trade the code for tokens and store them as consent ``consent_id``
        (default: this hook's). For an application backend that runs its own OAuth callback:
        ``hook.exchange_code(code, consent_id="cust-42")`` and the next DAG run uses it."""
        if consent_id is not None and consent_id != self.consent_id:
            return self.for_consent(consent_id).exchange_code(code, redirect_uri, code_verifier=code_verifier)
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
        access = self._to_access_token(data)
        refresh = data.get("refresh_token")
        if refresh:
            now = now_iso()
            previous = self.consent_store.load(cfg.conn_id, self.consent_id)
            self.consent_store.save(
                ConsentRecord(
                    conn_id=cfg.conn_id,
                    consent_id=self.consent_id,
                    refresh_token=refresh,
                    # default: descends from the connection's token (which it now overrides)
                    origin=fingerprint(cfg.refresh_token) if self.consent_id == DEFAULT_CONSENT_ID else None,
                    state=ACTIVE,
                    scopes=data.get("scope"),
                    provider_id=cfg.provider_id,
                    created_at=previous.created_at if previous is not None else now,
                    updated_at=now,
                    access_token=access.token,
                    access_token_expires_at=access.expires_at,
                    access_token_lifetime=access.lifetime,
                    access_token_scope=access.scope,
                )
            )
        with _lock_for(self._customer_tokens.key):
            _CACHE[self._customer_tokens.key] = access
        return data

    def revoke(self) -> None:
        """Revoke the consent at the server, then mark it ``revoked`` in the store (its tokens are
        wiped; the record stays so that ``consents list`` and the health check can tell)."""
        path = "/api/v1/revoke"
        try:
            self.transport.request_json("DELETE", path, token_source=self._customer_tokens)
        finally:
            with _lock_for(self._customer_tokens.key):
                _CACHE.pop(self._customer_tokens.key, None)
        self.forget_consent(state=REVOKED)

    def forget_consent(self, *, state: str = REVOKED, error: str | None = None) -> None:
        """Wipe the consent's tokens in the store and set ``state`` (no call to the bank)."""
        cfg = self.config

        def change(current: ConsentRecord | None) -> ConsentRecord | None:
            base = current or self._template()
            if base is None:
                return None
            return base.replace(
                refresh_token=None,
                access_token=None,
                access_token_expires_at=None,
                state=state,
                last_error=error or base.last_error,
                updated_at=now_iso(),
                origin=fingerprint(cfg.refresh_token)
                if self.consent_id == DEFAULT_CONSENT_ID
                else base.origin,
                lease_owner=None,
                lease_until=None,
            )

        try:
            self.consent_store.update(cfg.conn_id, self.consent_id, change)
        except ConsentStoreError as exc:
            log.warning("Could not mark consent %r of %s revoked: %s", self.consent_id, cfg.conn_id, exc)

    def has_consent(self) -> bool:
        """True when this consent has a usable refresh token (stored or the connection's)."""
        try:
            self.current_refresh_token()
        except ConsentRequiredError:
            return False
        return True

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: client credentials, then (if there is one) the customer consent.

        Airflow (``[core] test_connection = Enabled``) tests a copy of the form's connection under a
        random transient id, whose token store is empty: the consent judged is the one of the
        connection being tested (the request's ``connection_id``), with the form's fields.
        """
        tested = _tested_connection_id(self.openbanking_conn_id)
        if tested is not None and tested != self.openbanking_conn_id:
            import dataclasses

            try:
                cfg = dataclasses.replace(self.config, conn_id=tested)
            except (OpenBankingError, requests.RequestException) as exc:
                return False, self.redact(str(exc))
            self.openbanking_conn_id = tested
            self.__dict__["config"] = cfg
        try:
            providers = self.get_providers()
            message = f"Client credentials OK ({len(providers)} data provider(s))"
            if self.has_consent():
                ttl = self.access_token_ttl()
                message += f"; customer consent OK (access token valid for {ttl:.0f}s)"
            else:
                message += "; no customer consent yet (run `airflow-openbanking authorize`)"
            others = [
                c for c in self.consent_store.consent_ids(self.openbanking_conn_id) if c != self.consent_id
            ]
            if others:
                message += f"; {len(others)} other consent(s) stored"
            return True, message
        except (OpenBankingError, requests.RequestException, ConsentStoreError) as exc:
            return False, self.redact(str(exc))

    # -- FDX data: seed step 4 -------------------------------------------------------------------

    def _fdx_path(self, *segments: Any) -> str:
        # "/" (a root-mounted server), "" and "/api/fdx/5/" all join with exactly one slash
        return self.config.fdx_base_path.rstrip("/") + "".join(f"/{path_segment(s)}" for s in segments)

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

        yield from paginate(
            fetch,
            key,
            endpoint=f"GET {path}",
            params=query,
            stats=stats,
            on_page=on_page,
            max_pages=self.config.max_pages,
        )

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
        """The consent's accounts (``lightweight`` or ``details``), unwrapped, page by page.

        With ``account_ids`` only those accounts are yielded: ``accountIds`` is sent (Flinks
        filters on it) but, not being an FDX 5.3 parameter, it is also applied here, and what a
        server sent anyway is counted in ``stats.dropped`` and logged.
        """
        if result_type not in RESULT_TYPES:
            raise ValueError(f"result_type must be one of {', '.join(RESULT_TYPES)}, got {result_type!r}")
        params: dict[str, Any] = {"resultType": result_type}
        wanted: set[str] | None = None
        if account_ids is not None:
            ids = [str(a) for a in account_ids]
            if not ids:
                return
            params["accountIds"] = ",".join(ids)
            wanted = set(ids)
        items = self._iter("accounts", "accounts", params=params, stats=stats, on_page=on_page)
        accounts = self._unwrap_all(items, "GET /accounts")
        if wanted is None:
            yield from accounts
        else:
            yield from keep_accounts(accounts, wanted, stats=stats, endpoint="GET /accounts")

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
        """Transactions of one account posted in [start_time, end_time] (pending ones included).

        Only records dated in the window are yielded (``postedTimestamp``, else, for a pending one,
        ``transactionTimestamp``, as UTC days): a server that ignores ``startTime``/``endTime``
        cannot put a row outside the window into its landing; what was left out is counted in
        ``stats.dropped`` and logged.
        """
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
        yield from keep_in_window(
            self._unwrap_all(items, "GET /accounts/{accountId}/transactions"),
            params["startTime"],
            params["endTime"],
            TRANSACTION_DATE_FIELDS,
            stats=stats,
            endpoint=f"GET {self._fdx_path('accounts', account_id, 'transactions')}",
        )

    def iter_statements(
        self,
        account_id: str,
        start_time: DateLike | None = None,
        end_time: DateLike | None = None,
        *,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Statement descriptors of one account whose ``statementDate`` is in the window (the
        window is checked here too, as for transactions; records left out are in ``stats.dropped``)."""
        params = self._window(start_time, end_time)
        items = self._iter(
            "statements", "accounts", account_id, "statements", params=params, stats=stats, on_page=on_page
        )
        yield from keep_in_window(
            items,
            params["startTime"],
            params["endTime"],
            STATEMENT_DATE_FIELDS,
            stats=stats,
            endpoint=f"GET {self._fdx_path('accounts', account_id, 'statements')}",
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

    #: Investment accounts read by id at the same time when a listing carries no holdings (FDX 5.3).
    holdings_fetch_workers: int = 4

    def iter_holdings(
        self,
        account_ids: Iterable[str] | None = None,
        *,
        stats: PageStats | None = None,
        on_page: Callable[[PageStats], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Holdings of the investment accounts, each tagged with its ``accountId``, in account order.

        Flinks lists holdings in ``/accounts?resultType=details``; FDX 5.3 has them only on
        ``/accounts/{accountId}``. An investment account listed without holdings is therefore read
        by id, ``holdings_fetch_workers`` at a time, so every holding lands from either kind of
        server. ``stats``/``on_page`` count the pages of accounts walked (as in :meth:`iter_accounts`).
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        workers = max(1, min(self.holdings_fetch_workers, self._pool_size))
        queue: collections.deque[tuple[dict[str, Any], Future[dict[str, Any]] | None]] = collections.deque()
        fetched = 0

        def emit(account: dict[str, Any], future: Future[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
            source = future.result() if future is not None else account
            for holding in source.get("holdings") or []:
                if isinstance(holding, dict):
                    yield {"accountId": account.get("accountId"), **holding}

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openbanking-holdings") as pool:
            try:
                for account in self.iter_accounts("details", account_ids, stats=stats, on_page=on_page):
                    investment = account.get("accountCategory") == "INVESTMENT_ACCOUNT"
                    if not investment and "holdings" not in account:
                        continue
                    future = None
                    if investment and not account.get("holdings") and account.get("accountId"):
                        future = pool.submit(self.get_account, str(account["accountId"]))
                        fetched += 1
                    queue.append((account, future))
                    # yield in order, keeping at most 2 x workers accounts in flight
                    while queue and (queue[0][1] is None or queue[0][1].done() or len(queue) > 2 * workers):
                        yield from emit(*queue.popleft())
                while queue:
                    yield from emit(*queue.popleft())
            finally:
                for _, pending in queue:
                    if pending is not None:
                        pending.cancel()
        if fetched:
            log.info(
                "Holdings: %d investment account(s) listed without holdings were read from "
                "/accounts/{accountId} (FDX 5.3 keeps holdings there)",
                fetched,
            )


def _tested_connection_id(conn_id: str) -> str | None:
    """The id of the connection the UI's Test button tests, when ``conn_id`` is Airflow's transient
    copy of it (the API route's local ``transient_conn_id``); else None.

    Airflow passes no other trace of the real id to the hook, so the calling frames are read, and
    only a frame whose ``transient_conn_id`` equals ``conn_id`` counts.
    """
    import sys

    frame = sys._getframe(1)
    for _ in range(30):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        if frame.f_locals.get("transient_conn_id") == conn_id:
            real = getattr(frame.f_locals.get("test_body"), "connection_id", None)
            return str(real) if real else None
    return None


def pkce_pair() -> tuple[str, str]:
    """Return ``(code_verifier, code_challenge)`` for PKCE S256 (RFC 7636)."""
    import secrets

    verifier = secrets.token_urlsafe(64)[:96]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


__all__ = ["OpenBankingHook", "TokenResponse", "clear_token_cache", "mask_account_numbers", "pkce_pair"]
