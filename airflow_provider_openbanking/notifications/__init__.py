"""Notifiers (``airflow.sdk.BaseNotifier``) for ``on_failure_callback`` and friends."""

from __future__ import annotations

from airflow_provider_openbanking.notifications.log import LogNotifier

__all__ = ["LogNotifier"]
