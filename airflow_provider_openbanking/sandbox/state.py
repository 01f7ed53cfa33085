"""Run-time state of the sandbox: knobs, OAuth clients/codes/consents/tokens, faults, counters.

The server is a single asyncio process, so plain dicts are enough: no handler awaits between
reading and writing this state.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

from .data import DAY, Bank, datetime_to_epoch, epoch_to_datetime

SCOPES = (
    "ACCOUNT_BASIC",
    "ACCOUNT_DETAILED",
    "ACCOUNT_PAYMENTS",
    "INVESTMENTS",
    "TRANSACTIONS",
    "STATEMENTS",
    "CUSTOMER_CONTACT",
    "CUSTOMER_PERSONAL",
)
GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
CONSENT_MODES = ("approve", "deny", "prompt")
FAULT_KINDS = ("status", "drop", "malformed", "html", "repeat_offset", "oversized", "corrupt", "expire_token")
DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"
PROVIDERS = (
    {"id": "1000", "name": "Sandbox Bank", "status": "ACTIVE"},
    {"id": "1001", "name": "Maple Trust", "status": "ACTIVE"},
    {"id": "1002", "name": "Northern Credit Union", "status": "INACTIVE"},
)


class KnobError(ValueError):
    """An invalid admin request (bad knob, bad fault spec, unknown customer...)."""


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def parse_now(value: Any) -> int:
    """ISO datetime (``Z`` or offset; naive = UTC) or ``YYYY-MM-DD`` (= 23:59:59 that day) -> epoch."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, str):
        raise KnobError(f"now: expected an ISO datetime string, got {value!r}")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime_to_epoch(dt.datetime.fromisoformat(text)) + DAY - 1
        return datetime_to_epoch(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise KnobError(f"now: invalid ISO datetime {value!r}") from exc


def format_now(epoch: int) -> str:
    return epoch_to_datetime(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise KnobError(f"{name}: expected a boolean, got {value!r}")


def _as_number(name: str, value: Any, kind: type, minimum: float = 0) -> Any:
    if isinstance(value, bool):
        raise KnobError(f"{name}: expected a number, got {value!r}")
    try:
        out = kind(value)
    except (TypeError, ValueError) as exc:
        raise KnobError(f"{name}: expected a number, got {value!r}") from exc
    if out < minimum:
        raise KnobError(f"{name}: must be >= {minimum}")
    return out


@dataclass
class Knobs:
    """Settings that can change at run time through ``POST /_admin/config``."""

    access_token_ttl: float = 300
    rotate_refresh_tokens: bool = False
    refresh_grace_seconds: float = 10
    refresh_idle_days: float = 30
    code_ttl: float = 60
    consent_mode: str = "approve"
    consent_customer_id: str | None = None
    latency_ms: float = 0
    page_size: int = 100
    now: int = 0  # epoch seconds; shown as ISO
    empty_as_1107: bool = False
    statement_redirect: bool = False
    statement_processing: int = 0
    transactions_per_account: int = 400
    account_transactions: dict[str, int] = field(default_factory=dict)
    #: ``{real id: served id}``: the server names an account or a statement ``served id`` instead
    #: (hostile ids holding ``/``, ``..`` or URL syntax), in bodies and in request paths.
    id_aliases: dict[str, str] = field(default_factory=dict)
    #: Per-client token bucket: requests per second (0 = no limit) and burst (0 = one second's worth).
    #: Over it: 429, FDX code 1207, ``Retry-After``.
    rate_limit_rps: float = 0
    rate_limit_burst: int = 0
    #: Behave like a strict FDX 5.3 server: ``/accounts`` ignores ``accountIds`` and lists no
    #: holdings (they are only on ``/accounts/{accountId}``); transactions and statements ignore
    #: ``startTime``/``endTime`` (every record is served).
    strict_fdx53: bool = False

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["now"] = format_now(self.now)
        return out

    def update(self, changes: dict[str, Any], bank: Bank) -> None:
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise KnobError(f"unknown knob(s) {unknown}; known: {sorted(names)}")
        staged: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("rotate_refresh_tokens", "empty_as_1107", "statement_redirect", "strict_fdx53"):
                staged[name] = _as_bool(name, value)
            elif name in (
                "page_size",
                "statement_processing",
                "transactions_per_account",
                "rate_limit_burst",
            ):
                staged[name] = _as_number(name, value, int, 1 if name == "page_size" else 0)
                if name == "page_size" and staged[name] > 1000:
                    raise KnobError("page_size: must be <= 1000")
            elif name == "consent_mode":
                if value not in CONSENT_MODES:
                    raise KnobError(f"consent_mode: one of {CONSENT_MODES}")
                staged[name] = value
            elif name == "consent_customer_id":
                if value is not None and value not in bank.customer_by_id:
                    raise KnobError(f"consent_customer_id: unknown customer {value!r}")
                staged[name] = value
            elif name == "now":
                staged[name] = bank.default_now if value is None else parse_now(value)
            elif name == "account_transactions":
                if not isinstance(value, dict):
                    raise KnobError("account_transactions: expected {accountId: count}")
                for acc, n in value.items():
                    if acc not in bank.account_by_id:
                        raise KnobError(f"account_transactions: unknown account {acc!r}")
                    _as_number(name, n, int)
                staged[name] = {str(k): int(v) for k, v in value.items()}
            elif name == "id_aliases":
                staged[name] = _check_aliases(value, bank)
            else:
                staged[name] = _as_number(name, value, float)
        for name, value in staged.items():
            setattr(self, name, value)


def _check_aliases(value: Any, bank: Bank) -> dict[str, str]:
    if not isinstance(value, dict):
        raise KnobError("id_aliases: expected {real id: served id}")
    out: dict[str, str] = {}
    for real, served in value.items():
        if not isinstance(served, str) or not served or not real:
            raise KnobError(f"id_aliases: {real!r} -> {served!r}: ids must be non-empty strings")
        if served in bank.account_by_id or served in out.values():
            raise KnobError(f"id_aliases: served id {served!r} is already an id")
        out[str(real)] = served
    return out


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    loopback_any: bool = False

    def accepts_redirect(self, uri: str) -> bool:
        if uri in self.redirect_uris:
            return True
        if not self.loopback_any:
            return False
        try:
            parsed = urlparse(uri)
            _ = parsed.port  # raises on a bad port
        except ValueError:
            return False
        return (
            parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost") and not parsed.fragment
        )


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    customer_id: str
    scopes: tuple[str, ...]
    expires_at: float


@dataclass
class PendingAuthorization:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    customer_id: str
    expires_at: float


@dataclass
class Consent:
    consent_id: str
    client_id: str
    customer_id: str
    scopes: tuple[str, ...]
    refresh_token: str
    last_used: int  # bank clock (epoch seconds)
    previous_token: str | None = None
    rotated_at: float = 0.0  # monotonic
    revoked: bool = False
    # withdrawn at the bank: the token endpoint still refreshes, every data call answers 602
    bank_revoked: bool = False


@dataclass
class AccessToken:
    token: str
    client_id: str
    consent: Consent | None
    scopes: frozenset[str]
    expires_at: float  # monotonic
    issued_at: float = field(default_factory=time.monotonic)


def new_counters() -> dict[str, Any]:
    return {
        "requests": {},
        "token_grants": dict.fromkeys(GRANT_TYPES, 0),
        "invalid_grant": 0,
        "status": {},
        "faults_injected": 0,
        "rate_limited": 0,
        "rate_limited_by_client": {},
    }


def _new_issued() -> dict[str, collections.deque[str]]:
    return {kind: collections.deque(maxlen=10_000) for kind in ("access_tokens", "refresh_tokens", "codes")}


def normalize_scopes(value: Any) -> tuple[str, ...]:
    """A list or a space-separated string -> canonical tuple; unknown scope -> KnobError."""
    if value is None:
        return SCOPES
    items = value.split() if isinstance(value, str) else list(value)
    unknown = [s for s in items if s not in SCOPES]
    if unknown:
        raise KnobError(f"unknown scope(s) {unknown}")
    if not items:
        raise KnobError("no scope requested")
    return tuple(s for s in SCOPES if s in items)


class Sandbox:
    """All mutable state, plus the static :class:`Bank`."""

    def __init__(self, bank: Bank, startup: Knobs) -> None:
        self.bank = bank
        self.startup = startup
        self.file_secret = secrets.token_bytes(16)
        self.knobs = Knobs()
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthCode] = {}
        self.pending_auth: dict[str, PendingAuthorization] = {}
        self.consents: dict[str, Consent] = {}
        self.refresh_index: dict[str, Consent] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.faults: list[dict[str, Any]] = []
        self.counters: dict[str, Any] = new_counters()
        #: Every secret handed out since the last reset (tests check that none leaks).
        self.issued: dict[str, collections.deque[str]] = _new_issued()
        self._issued = 0
        #: client id -> [tokens, monotonic time of the last refill] (knobs ``rate_limit_*``).
        self.buckets: dict[str, list[float]] = {}
        self.reset()

    # ---- lifecycle --------------------------------------------------------------------------

    def reset(self) -> None:
        self.knobs = Knobs(**{f.name: getattr(self.startup, f.name) for f in fields(self.startup)})
        self.knobs.account_transactions = dict(self.startup.account_transactions)
        self.knobs.id_aliases = dict(self.startup.id_aliases)
        self.clients = {
            DEMO_CLIENT_ID: Client(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, [], loopback_any=True),
        }
        self.codes.clear()
        self.pending_auth.clear()
        self.consents.clear()
        self.refresh_index.clear()
        self.access_tokens.clear()
        self.faults.clear()
        self.counters = new_counters()
        self.issued = _new_issued()
        self.buckets.clear()

    @property
    def now(self) -> int:
        return self.knobs.now

    def transactions_for(self, account_id: str) -> int:
        return self.knobs.account_transactions.get(account_id, self.knobs.transactions_per_account)

    # ---- clients ----------------------------------------------------------------------------

    def register_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> Client:
        if not client_id or not client_secret:
            raise KnobError("client_id and client_secret are required")
        if not isinstance(redirect_uris, list) or not all(isinstance(u, str) for u in redirect_uris):
            raise KnobError("redirect_uris must be a list of exact URIs")
        client = Client(client_id, client_secret, list(redirect_uris))
        self.clients[client_id] = client
        return client

    def authenticate_client(self, client_id: str | None, client_secret: str | None) -> Client:
        client = self.clients.get(client_id or "")
        if client is None or not secrets.compare_digest(client.client_secret, client_secret or ""):
            raise OAuthError(401, "invalid_client", "Client authentication failed")
        return client

    # ---- tokens -----------------------------------------------------------------------------

    def issue_access_token(self, client_id: str, consent: Consent | None, scopes: tuple[str, ...]) -> str:
        self._issued += 1
        if self._issued % 1000 == 0:
            self._prune()
        token = secrets.token_urlsafe(32)
        self.issued["access_tokens"].append(token)
        expires = time.monotonic() + self.knobs.access_token_ttl
        self.access_tokens[token] = AccessToken(token, client_id, consent, frozenset(scopes), expires)
        return token

    def _prune(self) -> None:
        now = time.monotonic()
        for token in [t for t, a in self.access_tokens.items() if a.expires_at <= now]:
            del self.access_tokens[token]
        for code in [c for c, a in self.codes.items() if a.expires_at <= now]:
            del self.codes[code]
        for rid in [r for r, p in self.pending_auth.items() if p.expires_at <= now]:
            del self.pending_auth[rid]

    def lookup_access(self, token: str) -> AccessToken | None:
        at = self.access_tokens.get(token)
        if at is None:
            return None
        if at.expires_at <= time.monotonic():
            del self.access_tokens[token]
            return None
        return at

    def new_code(self, client_id: str, redirect_uri: str, customer_id: str, scopes: tuple[str, ...]) -> str:
        code = secrets.token_urlsafe(24)
        self.issued["codes"].append(code)
        self.codes[code] = AuthCode(
            client_id, redirect_uri, customer_id, scopes, time.monotonic() + self.knobs.code_ttl
        )
        return code

    def redeem_code(self, client: Client, code: str, redirect_uri: str | None) -> Consent:
        entry = self.codes.pop(code, None)  # single use, even when the exchange then fails
        if entry is None:
            raise OAuthError(400, "invalid_grant", "Authorization code is invalid or was already used")
        if entry.expires_at <= time.monotonic():
            raise OAuthError(400, "invalid_grant", "Authorization code has expired")
        if entry.client_id != client.client_id:
            raise OAuthError(400, "invalid_grant", "Authorization code was issued to another client")
        if redirect_uri != entry.redirect_uri:
            raise OAuthError(400, "invalid_grant", "redirect_uri does not match the authorization request")
        return self.create_consent(client.client_id, entry.customer_id, entry.scopes)

    # ---- consents ---------------------------------------------------------------------------

    def create_consent(
        self, client_id: str, customer_id: str, scopes: tuple[str, ...], idle_days: float = 0
    ) -> Consent:
        """A new consent; ``idle_days`` > 0 makes it one last used that long ago (bank clock)."""
        if not isinstance(idle_days, (int, float)) or isinstance(idle_days, bool) or not idle_days >= 0:
            raise KnobError(f"idle_days: expected a number >= 0, got {idle_days!r}")
        if customer_id not in self.bank.customer_by_id:
            raise KnobError(f"unknown customer {customer_id!r}")
        if client_id not in self.clients:
            raise KnobError(f"unknown client {client_id!r}")
        consent = Consent(
            consent_id=secrets.token_hex(8),
            client_id=client_id,
            customer_id=customer_id,
            scopes=scopes,
            refresh_token=secrets.token_urlsafe(32),
            last_used=self.now - int(idle_days * DAY),
        )
        self.issued["refresh_tokens"].append(consent.refresh_token)
        self.consents[consent.consent_id] = consent
        self.refresh_index[consent.refresh_token] = consent
        return consent

    def create_consents_bulk(
        self, count: Any = None, scopes: Any = None, client_id: Any = None
    ) -> list[Consent]:
        """A consent for each of the first ``count`` customers (None: every customer), in one go.

        The consent is named after its customer (``consent_id`` = the customer id) unless that
        customer already holds a consent of that name, then it gets a random id as usual.
        """
        total = self.bank.n_customers
        if count is None:
            n = total
        else:
            n = int(_as_number("count", count, int, 1))
            if n > total:
                raise KnobError(f"count: {n} is more than the {total} customers (--customers)")
        client = str(client_id or DEMO_CLIENT_ID)
        if client not in self.clients:
            raise KnobError(f"unknown client {client!r}")
        wanted = normalize_scopes(scopes)
        out = []
        for c in range(n):
            customer_id = f"cust-{c + 1:04d}"
            consent = self.create_consent(client, customer_id, wanted)
            if customer_id not in self.consents:
                del self.consents[consent.consent_id]
                consent.consent_id = customer_id
                self.consents[customer_id] = consent
            out.append(consent)
        return out

    def refresh(self, client: Client, token: str) -> tuple[Consent, str | None]:
        """Validate a refresh token; returns the consent and the refresh token to hand back
        (None when rotation is off)."""
        consent = self.refresh_index.get(token)
        if consent is None or consent.revoked or consent.client_id != client.client_id:
            raise OAuthError(400, "invalid_grant", "Refresh token is invalid, expired or revoked")
        if self.now - consent.last_used > self.knobs.refresh_idle_days * DAY:
            self.revoke(consent)
            raise OAuthError(400, "invalid_grant", "Refresh token lapsed after inactivity")
        if token == consent.refresh_token:
            consent.last_used = max(consent.last_used, self.now)
            if not self.knobs.rotate_refresh_tokens:
                return consent, None
            if consent.previous_token is not None:
                self.refresh_index.pop(consent.previous_token, None)
            consent.previous_token = token
            consent.refresh_token = secrets.token_urlsafe(32)
            self.issued["refresh_tokens"].append(consent.refresh_token)
            consent.rotated_at = time.monotonic()
            self.refresh_index[consent.refresh_token] = consent
            return consent, consent.refresh_token
        # the immediately previous token, re-used inside the grace window: answer with the current one
        if (
            token == consent.previous_token
            and time.monotonic() - consent.rotated_at <= self.knobs.refresh_grace_seconds
        ):
            consent.last_used = max(consent.last_used, self.now)
            return consent, consent.refresh_token
        raise OAuthError(400, "invalid_grant", "Refresh token was rotated and is no longer valid")

    def revoke(self, consent: Consent) -> None:
        consent.revoked = True
        self.refresh_index.pop(consent.refresh_token, None)
        if consent.previous_token:
            self.refresh_index.pop(consent.previous_token, None)
        # access tokens keep pointing at the revoked consent: data calls answer 602, not 401

    def revoke_where(
        self, *, customer_id: str | None = None, refresh_token: str | None = None, at_bank: bool = False
    ) -> int:
        """Revoke matching consents. ``at_bank``: the customer withdrew access at the bank, so the
        refresh token keeps working but every data call answers 602."""
        if refresh_token:
            consent = self.refresh_index.get(refresh_token)
            targets = [consent] if consent is not None else []
        elif customer_id:
            targets = [c for c in self.consents.values() if c.customer_id == customer_id and not c.revoked]
        else:
            raise KnobError("give customer_id or refresh_token")
        for consent in targets:
            if at_bank:
                consent.bank_revoked = True
            else:
                self.revoke(consent)
        return len(targets)

    # ---- rate limit -------------------------------------------------------------------------

    def rate_limit(self, client_id: str) -> float | None:
        """Take a token from ``client_id``'s bucket: None when the request may go on, else the
        seconds until the bucket holds a token again (the request is refused, and counted)."""
        rps = self.knobs.rate_limit_rps
        if rps <= 0:
            return None
        burst = float(self.knobs.rate_limit_burst or max(1, math.ceil(rps)))
        now = time.monotonic()
        bucket = self.buckets.get(client_id)
        if bucket is None:
            bucket = self.buckets[client_id] = [burst, now]
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rps)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        self.counters["rate_limited"] += 1
        by_client = self.counters["rate_limited_by_client"]
        by_client[client_id] = by_client.get(client_id, 0) + 1
        return (1.0 - tokens) / rps

    def expire_access_token(self, token: str) -> bool:
        """Expire one access token now (the ``expire_token`` fault): its next use answers 401."""
        at = self.access_tokens.get(token)
        if at is None:
            return False
        at.expires_at = 0.0
        return True

    # ---- faults -----------------------------------------------------------------------------

    def add_faults(self, specs: list[dict[str, Any]]) -> None:
        staged = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise KnobError("each fault must be an object")
            kind = spec.get("kind")
            if kind not in FAULT_KINDS:
                raise KnobError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
            known = {
                "kind",
                "status",
                "code",
                "retry_after",
                "count",
                "path",
                "method",
                "message",
                "with_offset",
                "bytes",
                "chunked",
                "set",
                "record",
            }
            extra = sorted(set(spec) - known)
            if extra:
                raise KnobError(f"unknown fault field(s) {extra}")
            fault = dict(spec)
            fault["count"] = int(_as_number("count", spec.get("count", 1), int, 1))
            if kind == "status":
                if "status" not in spec:
                    raise KnobError("a status fault needs 'status'")
                fault["status"] = int(_as_number("status", spec["status"], int, 400))
                if fault["status"] > 599:
                    raise KnobError("status must be 400..599")
            elif kind == "html":
                fault["status"] = int(_as_number("status", spec.get("status", 502), int, 400))
            elif kind == "oversized":
                fault["bytes"] = int(_as_number("bytes", spec.get("bytes", 2**20), int, 1))
                fault["chunked"] = _as_bool("chunked", spec.get("chunked", False))
            elif kind == "corrupt":
                if ("set" in spec) == ("record" in spec):
                    raise KnobError("a corrupt fault needs either 'set' (fields to overwrite) or 'record'")
                if "set" in spec and not isinstance(spec["set"], dict):
                    raise KnobError("'set' must be an object of fields")
            if "with_offset" in spec:
                fault["with_offset"] = _as_bool("with_offset", spec["with_offset"])
            if spec.get("retry_after") is not None:
                fault["retry_after"] = _as_number("retry_after", spec["retry_after"], float)
            if spec.get("method"):
                fault["method"] = str(spec["method"]).upper()
            staged.append(fault)
        self.faults.extend(staged)

    def take_fault(
        self, method: str, path: str, paginated: bool, has_offset: bool = False
    ) -> dict[str, Any] | None:
        """The first pending fault matching the request (consumed), or None.

        ``paginated``: a GET of a paginated endpoint carrying an offset (``repeat_offset`` needs
        one); ``has_offset``: the request carries an offset (``with_offset`` faults need one).
        """
        for idx, fault in enumerate(self.faults):
            if fault.get("path") and fault["path"] not in path:
                continue
            if fault.get("method") and fault["method"] != method:
                continue
            if fault["kind"] == "repeat_offset" and not paginated:
                continue
            if fault.get("with_offset") and not has_offset:
                continue
            fault["count"] -= 1
            if fault["count"] <= 0:
                del self.faults[idx]
            self.counters["faults_injected"] += 1
            return dict(fault)
        return None

    # ---- counters ---------------------------------------------------------------------------

    def alias(self, real: str) -> str:
        """The id the server shows for ``real`` (itself unless aliased)."""
        return self.knobs.id_aliases.get(real, real)

    def unalias(self, served: str) -> str:
        """The real id behind a served one (itself unless it is an alias)."""
        for real, alias in self.knobs.id_aliases.items():
            if alias == served:
                return real
        return served

    def count_request(self, key: str) -> None:
        requests = self.counters["requests"]
        if key not in requests and len(requests) > 500:
            key = "(other)"
        requests[key] = requests.get(key, 0) + 1

    def count_status(self, status: int) -> None:
        by_status = self.counters["status"]
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1
