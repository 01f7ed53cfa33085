"""Fernet encryption of the tokens a consent store writes itself (the SQL store).

The key is Airflow's own (``[core] fernet_key``, comma-separated keys for rotation) unless the
connection names a key connection (extra ``consent_store_fernet_conn_id``: its password holds the
key or keys). A store that would have to write a token in plain text refuses to start instead.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from airflow_provider_openbanking.consents._airflow import fernet_key_from_conf, get_connection
from airflow_provider_openbanking.consents.store import ConsentStoreError


def fernet_from_keys(keys: str, where: str) -> MultiFernet:
    """A ``MultiFernet`` of comma-separated ``keys`` (the first encrypts, every one decrypts)."""
    parts = [k.strip() for k in keys.split(",") if k.strip()]
    if not parts:
        raise ConsentStoreError(f"{where} holds no Fernet key")
    try:
        return MultiFernet([Fernet(k.encode()) for k in parts])
    except (ValueError, TypeError):
        raise ConsentStoreError(
            f"{where} is not a valid Fernet key (32 url-safe base64-encoded bytes; make one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        ) from None


def resolve_fernet(fernet_conn_id: str | None = None) -> MultiFernet:
    """The key named by ``fernet_conn_id``, else ``[core] fernet_key``; raises when there is none."""
    if fernet_conn_id:
        conn = get_connection(fernet_conn_id)
        return fernet_from_keys(conn.password or "", f"the password of connection {fernet_conn_id!r}")
    keys = fernet_key_from_conf()
    if not keys:
        raise ConsentStoreError(
            "the SQL consent store encrypts tokens and needs a Fernet key: set Airflow's [core] "
            "fernet_key, or name a connection whose password is the key in the extra "
            "consent_store_fernet_conn_id"
        )
    return fernet_from_keys(keys, "[core] fernet_key")


class TokenCipher:
    """Encrypt/decrypt one token; ``None`` stays ``None``."""

    def __init__(self, fernet: MultiFernet) -> None:
        self._fernet = fernet

    def encrypt(self, token: str | None) -> str | None:
        return None if token is None else self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, blob: str | None, what: str) -> str | None:
        if blob is None:
            return None
        try:
            return self._fernet.decrypt(blob.encode()).decode()
        except InvalidToken:
            raise ConsentStoreError(
                f"cannot decrypt the stored {what}: the Fernet key changed (keep the old key after the "
                "new one in the comma-separated key list while rotating)"
            ) from None


__all__ = ["TokenCipher", "fernet_from_keys", "resolve_fernet"]
