"""Compatibility: consent health moved to :mod:`airflow_provider_openbanking.consents.health`.

Everything that module exports is importable from here as before, and
:func:`check_consent_health` keeps its 0.x signature (one connection id, its ``default`` consent).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from airflow_provider_openbanking.consents import health as _health
from airflow_provider_openbanking.consents.health import *  # noqa: F403 -- health's whole __all__, as before
from airflow_provider_openbanking.consents.health import IDLE_WARN_DAYS, check_consent, health_record_path


def check_consent_health(
    conn_id: str,
    *,
    interval_start: dt.datetime,
    interval_end: dt.datetime,
    destination: Any = None,
    required_scopes: Iterable[str] | str | None = None,
    warn_within_days: float | None = IDLE_WARN_DAYS,
    **context: Any,
) -> dict[str, Any]:
    """Refresh, probe and land the ``default`` consent of ``conn_id``: its record plus ``path``."""
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
    from airflow_provider_openbanking.landing import write_jsonl

    hook = OpenBankingHook(conn_id)
    try:
        record = check_consent(
            hook, required_scopes=required_scopes, warn_within_days=warn_within_days, **context
        )
    finally:
        hook.close()
    path = health_record_path(conn_id, interval_start, interval_end, destination)
    write_jsonl(path, [record])
    return {**record, "path": str(path)}


__all__ = [*_health.__all__, "check_consent_health"]
