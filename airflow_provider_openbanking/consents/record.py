"""One consent's record: what a store keeps per (connection id, consent id).

A record carries secrets (the refresh token, the current access token): its ``repr`` hides them,
:meth:`ConsentRecord.public` drops them, and only a store's own serialisation sees them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

#: The consent of a connection's own ``refresh_token`` extra (and of every single-consent set-up).
DEFAULT_CONSENT_ID = "default"

#: Record states. ``active``: usable; ``needs_reauthorization``: the bank refused the refresh
#: token (lapsed, revoked at the bank, rotated away): only the customer can help; ``revoked``: this
#: side revoked it (``consents revoke``).
ACTIVE = "active"
NEEDS_REAUTHORIZATION = "needs_reauthorization"
REVOKED = "revoked"
STATES = (ACTIVE, NEEDS_REAUTHORIZATION, REVOKED)

#: Consent ids: the user's own customer ids, typically. No ``/``, ``@`` or whitespace, so that
#: every backend can use them in a key unambiguously.
CONSENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")

_SECRET_FIELDS = ("refresh_token", "access_token")


def fingerprint(token: str | None) -> str | None:
    """A short, non-reversible id of a token (safe to store and to log)."""
    if not token:
        return None
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def now_iso() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def validate_consent_id(consent_id: Any) -> str:
    """Return ``consent_id`` as a string, or raise ``ValueError`` saying what is allowed."""
    if not isinstance(consent_id, str) or not CONSENT_ID_RE.match(consent_id):
        raise ValueError(
            f"consent_id {consent_id!r} is not valid: 1-128 characters, letters, digits and "
            "'_.:+-', starting with a letter or digit"
        )
    return consent_id


@dataclass
class ConsentRecord:
    """Everything a store keeps for one consent of one connection.

    ``version`` is the store's optimistic-concurrency counter: every write bumps it, and
    :meth:`ConsentStore.compare_and_swap` writes only when the stored version is still the one the
    writer read. ``lease_owner``/``lease_until`` mark the one process allowed to make the next
    refresh grant (see :mod:`airflow_provider_openbanking.consents.store`).
    """

    conn_id: str
    consent_id: str = DEFAULT_CONSENT_ID
    refresh_token: str | None = None
    origin: str | None = None
    """Fingerprint of the token this chain started from (for ``default``: the connection's extra)."""
    state: str = ACTIVE
    scopes: str | None = None
    provider_id: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    """When the refresh token was last written."""
    last_refresh_at: str | None = None
    """When a refresh grant last succeeded (Flinks drops a consent after 30 idle days)."""
    last_success_at: str | None = None
    """When a data call for this consent last succeeded (``hook.record_success()``)."""
    last_error: str | None = None
    """Code of the last error (``hook.record_error(code)``, or the refresh grant's refusal)."""
    access_token: str | None = None
    access_token_expires_at: float | None = None
    """Epoch seconds."""
    access_token_lifetime: float | None = None
    access_token_scope: str | None = None
    version: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    """Epoch seconds."""

    def __repr__(self) -> str:  # never print a token
        return (
            f"ConsentRecord(conn_id={self.conn_id!r}, consent_id={self.consent_id!r}, "
            f"state={self.state!r}, version={self.version})"
        )

    __str__ = __repr__

    @property
    def key(self) -> tuple[str, str]:
        return (self.conn_id, self.consent_id)

    def access_token_left(self, now: float | None = None) -> float:
        """Seconds the stored access token has left (0 when there is none)."""
        if not self.access_token or self.access_token_expires_at is None:
            return 0.0
        return self.access_token_expires_at - (time.time() if now is None else now)

    def lease_free(self, owner: str, now: float | None = None) -> bool:
        """True when nobody else holds an unexpired refresh lease."""
        if not self.lease_owner or self.lease_owner == owner:
            return True
        return (self.lease_until or 0.0) <= (time.time() if now is None else now)

    def replace(self, **changes: Any) -> ConsentRecord:
        return dataclasses.replace(self, **changes)

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every field, secrets included (for a store's own serialisation only)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def public(self) -> dict[str, Any]:
        """Every field but the secrets and the lease: safe to print, log and push to XCom."""
        data = self.to_dict()
        for name in (*_SECRET_FIELDS, "lease_owner", "lease_until", "access_token_scope"):
            data.pop(name, None)
        data["has_refresh_token"] = bool(self.refresh_token)
        data["access_token_left"] = round(max(self.access_token_left(), 0.0), 1)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], conn_id: str, consent_id: str) -> ConsentRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["conn_id"], known["consent_id"] = conn_id, consent_id
        record = cls(**known)
        if record.state not in STATES:
            record.state = ACTIVE
        try:
            record.version = int(record.version or 0)
        except (TypeError, ValueError):
            record.version = 0
        return record

    @classmethod
    def from_json(cls, text: Any, conn_id: str, consent_id: str = DEFAULT_CONSENT_ID) -> ConsentRecord | None:
        """Read a record; also reads what the token store of 0.x wrote (``refresh_token``,
        ``origin``, ``updated_at``, ``last_refresh_at``, ``scopes``). None when unreadable."""
        if isinstance(text, dict):
            data: Any = text
        else:
            try:
                data = json.loads(text)
            except (TypeError, ValueError):
                return None
        if not isinstance(data, dict):
            return None
        token = data.get("refresh_token")
        if token is not None and not isinstance(token, str):
            return None
        if token is None and "state" not in data:  # neither an old nor a new record
            return None
        return cls.from_dict(data, conn_id, consent_id)


__all__ = [
    "ACTIVE",
    "CONSENT_ID_RE",
    "DEFAULT_CONSENT_ID",
    "NEEDS_REAUTHORIZATION",
    "REVOKED",
    "STATES",
    "ConsentRecord",
    "fingerprint",
    "now_iso",
    "validate_consent_id",
]
