"""Compatibility: the token store of 0.x, superseded by :mod:`airflow_provider_openbanking.consents`.

The provider itself uses consent stores now; this module stays for code that imported it. Its
:class:`VariableTokenStore` reads and writes the very Variable the consent store keeps the
``default`` consent of a connection in (``openbanking_token__<conn_id>``), in the old record
format, which :class:`~airflow_provider_openbanking.consents.record.ConsentRecord` reads (and the
other way round: extra fields are ignored).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from airflow_provider_openbanking.consents.record import fingerprint, now_iso
from airflow_provider_openbanking.consents.variable import in_task_context as _in_task_context


@dataclass
class TokenRecord:
    """What the store keeps for one connection."""

    refresh_token: str
    origin: str | None = None
    """Fingerprint of the connection's refresh token this chain started from."""
    updated_at: str = field(default_factory=now_iso)
    """When the refresh token was last written."""
    last_refresh_at: str | None = None
    """When a refresh grant last succeeded (Flinks drops a consent after 30 idle days)."""
    scopes: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"TokenRecord(origin={self.origin!r}, updated_at={self.updated_at!r})"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TokenRecord | None:
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str):
            return None
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@runtime_checkable
class TokenStore(Protocol):
    """Pluggable storage of a consent's newest refresh token (see module docstring)."""

    def load(self, conn_id: str) -> TokenRecord | None:
        """Return the stored record for ``conn_id`` or None."""

    def save(self, conn_id: str, record: TokenRecord) -> None:
        """Persist ``record`` durably before returning."""

    def delete(self, conn_id: str) -> None:
        """Forget the record (after a revoke)."""


class InMemoryTokenStore:
    """A store that lives as long as the process: for scripts and one-off use, not for DAGs."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, conn_id: str) -> TokenRecord | None:
        with self._lock:
            text = self._data.get(conn_id)
        return TokenRecord.from_json(text) if text else None

    def save(self, conn_id: str, record: TokenRecord) -> None:
        with self._lock:
            self._data[conn_id] = record.to_json()

    def delete(self, conn_id: str) -> None:
        with self._lock:
            self._data.pop(conn_id, None)


class VariableTokenStore:
    """Keep the record in the Airflow Variable ``<prefix><conn_id>`` (default ``openbanking_token__``).

    Inside a task it goes through the Task SDK (the only path a task has); elsewhere (the
    ``airflow-openbanking`` CLI on an Airflow host, tests) it uses the metadata database directly.
    """

    def __init__(self, prefix: str = "openbanking_token__") -> None:
        self.prefix = prefix

    def key(self, conn_id: str) -> str:
        return f"{self.prefix}{conn_id}"

    def load(self, conn_id: str) -> TokenRecord | None:
        key = self.key(conn_id)
        value: Any
        if _in_task_context():
            from airflow.sdk import Variable

            value = Variable.get(key, default=None)
        else:
            from airflow.models import Variable as DbVariable

            value = DbVariable.get(key, default_var=None)
        if value is None:
            return None
        if isinstance(value, dict):
            value = json.dumps(value)
        return TokenRecord.from_json(str(value))

    def save(self, conn_id: str, record: TokenRecord) -> None:
        key = self.key(conn_id)
        description = "Newest refresh token of an openbanking connection (airflow-provider-openbanking)."
        if _in_task_context():
            from airflow.sdk import Variable

            Variable.set(key, record.to_json(), description=description)
        else:
            from airflow.models import Variable as DbVariable

            DbVariable.set(key, record.to_json(), description=description)

    def delete(self, conn_id: str) -> None:
        key = self.key(conn_id)
        if _in_task_context():
            from airflow.sdk import Variable

            Variable.delete(key)
        else:
            from airflow.models import Variable as DbVariable

            DbVariable.delete(key)


__all__ = ["InMemoryTokenStore", "TokenRecord", "TokenStore", "VariableTokenStore", "fingerprint", "now_iso"]
