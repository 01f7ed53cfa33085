"""Pick a connection's consent store from its extras.

``consent_store`` (``token_store`` is the 0.x spelling, still read): ``variable`` (default),
``sql`` (needs ``consent_store_conn_id``; implied by it), ``memory``, or the dotted path of a
:class:`~.store.ConsentStore` subclass built with no arguments.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_openbanking.consents.memory import InMemoryConsentStore
from airflow_provider_openbanking.consents.store import ConsentStore, ConsentStoreError
from airflow_provider_openbanking.consents.variable import VariableConsentStore

KINDS = ("variable", "sql", "memory")


def build_store(
    kind: str, *, sql_conn_id: str | None = None, fernet_conn_id: str | None = None
) -> ConsentStore:
    """The store for ``kind``; raises :class:`ConsentStoreError` naming what is wrong."""
    if kind == "variable":
        return VariableConsentStore()
    if kind == "memory":
        return InMemoryConsentStore()
    if kind == "sql":
        if not sql_conn_id:
            raise ConsentStoreError(
                "consent_store 'sql' needs consent_store_conn_id (a common-sql connection)"
            )
        from airflow_provider_openbanking.consents.sql import SqlConsentStore

        return SqlConsentStore(sql_conn_id, fernet_conn_id=fernet_conn_id)
    if "." in kind:
        import importlib

        module_name, _, class_name = kind.rpartition(".")
        try:
            cls: Any = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ConsentStoreError(f"consent_store {kind!r} cannot be imported: {exc}") from None
        store = cls()
        if not isinstance(store, ConsentStore):
            raise ConsentStoreError(f"consent_store {kind} is not a ConsentStore subclass")
        return store
    raise ConsentStoreError(
        f"consent_store must be one of {', '.join(KINDS)} or a dotted class path, got {kind!r}"
    )


__all__ = ["KINDS", "build_store"]
