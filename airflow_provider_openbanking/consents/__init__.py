"""Consents: many customers per Data Recipient client.

An ``openbanking`` connection is one *client* (host, client id and secret, defaults for provider,
scopes and redirect URI). It holds any number of *consents*, each named by a ``consent_id`` the
user chooses (typically their own customer id). The connection's own ``refresh_token`` extra is
the consent :data:`DEFAULT_CONSENT_ID`, so a single-consent set-up works unchanged.

- :mod:`.record` -- :class:`ConsentRecord`, what is kept per (connection id, consent id);
- :mod:`.store` -- the :class:`ConsentStore` contract (compare-and-swap, refresh lease);
- backends: :mod:`.variable` (default: Airflow Variables), :mod:`.sql` (any common-sql
  connection, Fernet-encrypted tokens), :mod:`.memory`, or a dotted class path (:mod:`.factory`);
- :mod:`.masking` -- token redaction whose cost does not grow with the number of consents;
- :mod:`.health` -- is a consent usable? (the ``status`` command and the health DAG);
- :mod:`.onboarding` -- reading and validating ``consents import`` files.

The hook imports this package; nothing here imports the hook at run time.
"""

from __future__ import annotations

from airflow_provider_openbanking.consents.factory import build_store
from airflow_provider_openbanking.consents.memory import InMemoryConsentStore
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
from airflow_provider_openbanking.consents.variable import VariableConsentStore

__all__ = [
    "ACTIVE",
    "DEFAULT_CONSENT_ID",
    "NEEDS_REAUTHORIZATION",
    "REVOKED",
    "ConsentRecord",
    "ConsentStore",
    "ConsentStoreError",
    "InMemoryConsentStore",
    "VariableConsentStore",
    "build_store",
    "fingerprint",
    "now_iso",
    "validate_consent_id",
]
