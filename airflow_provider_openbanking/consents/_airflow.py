"""The two Airflow look-ups consents need, done the supported way in and outside a task."""

from __future__ import annotations

from typing import Any

from airflow_provider_openbanking.consents.variable import in_task_context


def get_connection(conn_id: str) -> Any:
    """The connection ``conn_id`` wherever Airflow keeps it.

    In a task: the Task SDK (the API server resolves it). Elsewhere (a CLI on an Airflow host):
    the chain ``airflow connections get`` uses -- ``airflow.models.Connection.get_connection_from_secrets``:
    custom secrets backends, ``AIRFLOW_CONN_*``, then the metadata database. The Task SDK's own
    lookup sees only the environment outside a task. Raises ``AirflowNotFoundException``.
    """
    if in_task_context():
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(conn_id)
    from airflow.models import Connection

    return Connection.get_connection_from_secrets(conn_id)


def fernet_key_from_conf() -> str:
    """``[core] fernet_key`` of this process ('' when unset)."""
    try:
        from airflow.configuration import conf

        return (conf.get("core", "fernet_key", fallback="") or "").strip()
    except Exception:  # pragma: no cover - no configuration at all
        return ""
