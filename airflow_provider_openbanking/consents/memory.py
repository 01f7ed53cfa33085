"""A consent store that lives as long as the process: for scripts, tests and benchmarks.

Compare-and-swap is atomic (one lock). Nothing outlives the process, so it is no place for the
consents of a DAG under real services (each task is a process of its own).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from airflow_provider_openbanking.consents.record import ConsentRecord
from airflow_provider_openbanking.consents.store import ConsentStore


class InMemoryConsentStore(ConsentStore):
    """Records kept as JSON text (so a caller never shares a mutable record with the store)."""

    kind = "memory"

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def load(self, conn_id: str, consent_id: str) -> ConsentRecord | None:
        with self._lock:
            text = self._data.get((conn_id, consent_id))
        return ConsentRecord.from_json(text, conn_id, consent_id) if text else None

    def load_many(self, conn_id: str, consent_ids: Iterable[str]) -> dict[str, ConsentRecord]:
        with self._lock:
            texts = {c: self._data.get((conn_id, c)) for c in consent_ids}
        found = {c: ConsentRecord.from_json(t, conn_id, c) for c, t in texts.items() if t}
        return {c: r for c, r in found.items() if r is not None}

    def consent_ids(self, conn_id: str) -> list[str]:
        with self._lock:
            return sorted(c for (conn, c) in self._data if conn == conn_id)

    def save(self, record: ConsentRecord) -> ConsentRecord:
        with self._lock:
            old = self._data.get(record.key)
            version = (ConsentRecord.from_json(old, *record.key) or record).version if old else 0
            record.version = version + 1
            self._data[record.key] = record.to_json()
        return record

    def compare_and_swap(self, record: ConsentRecord, expected_version: int) -> bool:
        with self._lock:
            old = self._data.get(record.key)
            stored = ConsentRecord.from_json(old, *record.key) if old else None
            if (stored.version if stored is not None else 0) != expected_version:
                return False
            record.version = expected_version + 1
            self._data[record.key] = record.to_json()
            return True

    def delete(self, conn_id: str, consent_id: str) -> None:
        with self._lock:
            self._data.pop((conn_id, consent_id), None)

    def describe(self, conn_id: str, consent_id: str | None = None) -> str:
        return "the in-memory consent store (lost when this process ends)"


__all__ = ["InMemoryConsentStore"]
