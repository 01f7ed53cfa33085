"""The default consent store: Airflow Variables. Zero configuration, works on every executor.

Layout (``P`` = the prefix, default ``openbanking_token__``):

- ``P<conn_id>`` -- the ``default`` consent. The very key the token store of 0.x wrote, so a
  record written before consents existed is read as it is;
- ``P<conn_id>@<consent_id>`` -- every other consent (``@`` occurs in no connection or consent id,
  so no two keys collide);
- ``openbanking_consents__<conn_id>`` -- the *index*: the sorted ids of the connection's consents.
  A task can read and write Variables but has no supported way to list them, so the ids a DAG
  fans out over are kept in one Variable, written when a consent is added or removed (by
  ``consents import``, ``exchange_code``, ``revoke``), never on a refresh.

Every key contains ``token``, so Airflow masks these values wherever it shows them. Airflow encrypts
Variable values with its Fernet key (``[core] fernet_key``); without one they are stored in plain
text, and the first write of a process says so once in the log.

Inside a task the store goes through the Task SDK (the only path a task has); elsewhere (the
``airflow-openbanking`` CLI on an Airflow host, tests) through the metadata database, where an
import is one transaction and a batch read one query.

Variables have no conditional write. :meth:`VariableConsentStore.compare_and_swap` reads, compares
the version, writes, waits ``settle_seconds`` and reads back: a concurrent writer that overwrote
the record in that window makes it return False. It closes the race between task processes of one
consent in practice (their read-compare-write takes milliseconds); for a hard guarantee under heavy
concurrency use the SQL store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow_provider_openbanking.consents.record import DEFAULT_CONSENT_ID, ConsentRecord
from airflow_provider_openbanking.consents.store import ConsentStore

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "openbanking_token__"
INDEX_PREFIX = "openbanking_consents__"
_DESCRIPTION = (
    "Consent of an openbanking connection (airflow-provider-openbanking): tokens, state, timestamps."
)
_INDEX_DESCRIPTION = "Consent ids of an openbanking connection (airflow-provider-openbanking)."

_warned_plaintext = False


def in_task_context() -> bool:
    """True inside a task or trigger process, where the SDK talks to the API server."""
    import sys

    return (
        getattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS", None)
        is not None
    )


def fernet_key_configured() -> bool:
    """True when this process sees a ``[core] fernet_key`` (Airflow then encrypts Variables)."""
    try:
        from airflow.configuration import conf

        return bool((conf.get("core", "fernet_key", fallback="") or "").strip())
    except Exception:  # pragma: no cover - no configuration at all
        return False


def warn_if_plaintext(what: str) -> None:
    """Log once per process that tokens are about to be stored unencrypted."""
    global _warned_plaintext
    if _warned_plaintext or fernet_key_configured():
        return
    _warned_plaintext = True
    log.warning(
        "No Fernet key is configured ([core] fernet_key is empty): Airflow stores Variable values in "
        "plain text, so %s keeps refresh and access tokens unencrypted in the metadata database. "
        "Set [core] fernet_key (see Airflow's 'Fernet' docs), or use the SQL consent store, which "
        "always encrypts",
        what,
    )


class VariableConsentStore(ConsentStore):
    """Consents in Airflow Variables (see the module docstring for the layout and its limits)."""

    kind = "variable"

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, settle_seconds: float = 0.05) -> None:
        self.prefix = prefix
        self.settle_seconds = settle_seconds

    # -- keys ------------------------------------------------------------------------------------

    def key(self, conn_id: str, consent_id: str = DEFAULT_CONSENT_ID) -> str:
        if consent_id == DEFAULT_CONSENT_ID:
            return f"{self.prefix}{conn_id}"
        return f"{self.prefix}{conn_id}@{consent_id}"

    @staticmethod
    def index_key(conn_id: str) -> str:
        return f"{INDEX_PREFIX}{conn_id}"

    # -- raw Variable access (SDK in a task, metadata DB elsewhere) -------------------------------

    @staticmethod
    def _get(key: str) -> str | None:
        value: Any
        if in_task_context():
            from airflow.sdk import Variable

            value = Variable.get(key, default=None)
        else:
            from airflow.models import Variable as DbVariable

            value = DbVariable.get(key, default_var=None)
        if value is None:
            return None
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    @staticmethod
    def _set(key: str, value: str, description: str, session: Any = None) -> None:
        if in_task_context():
            from airflow.sdk import Variable

            Variable.set(key, value, description=description)
        else:
            from airflow.models import Variable as DbVariable

            if session is not None:
                DbVariable.set(key, value, description=description, session=session)
            else:
                DbVariable.set(key, value, description=description)

    @staticmethod
    def _delete(key: str) -> None:
        if in_task_context():
            from airflow.sdk import Variable

            Variable.delete(key)
        else:
            from airflow.models import Variable as DbVariable

            DbVariable.delete(key)

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """One metadata-DB transaction outside a task (None inside one: the SDK has none)."""
        if in_task_context():
            yield None
            return
        from airflow.utils.session import create_session

        with create_session() as session:
            yield session

    # -- the index -------------------------------------------------------------------------------

    def _read_index(self, conn_id: str) -> list[str]:
        raw = self._get(self.index_key(conn_id))
        if not raw:
            return []
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("Variable %s is not valid JSON; ignoring it", self.index_key(conn_id))
            return []
        ids = data.get("ids") if isinstance(data, dict) else data
        return sorted({str(i) for i in ids}) if isinstance(ids, list) else []

    def _write_index(self, conn_id: str, ids: Iterable[str], session: Any = None) -> None:
        value = json.dumps({"ids": sorted(set(ids))}, separators=(",", ":"))
        self._set(self.index_key(conn_id), value, _INDEX_DESCRIPTION, session)

    def _change_index(self, conn_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Add/remove ids; re-read after a settle and repeat if a concurrent writer lost them."""
        add, remove = set(add), set(remove)
        for _ in range(10):
            ids = set(self._read_index(conn_id))
            if add <= ids and not (remove & ids):
                return
            self._write_index(conn_id, (ids | add) - remove)
            if self.settle_seconds:
                time.sleep(self.settle_seconds)
        log.warning("The consent index %s kept changing under concurrent writes", self.index_key(conn_id))

    # -- the contract ----------------------------------------------------------------------------

    def load(self, conn_id: str, consent_id: str) -> ConsentRecord | None:
        raw = self._get(self.key(conn_id, consent_id))
        return ConsentRecord.from_json(raw, conn_id, consent_id) if raw else None

    def load_many(self, conn_id: str, consent_ids: Iterable[str]) -> dict[str, ConsentRecord]:
        ids = list(consent_ids)
        if in_task_context() or not ids:
            return super().load_many(conn_id, ids)
        # Outside a task: one query per 500 keys instead of one lookup (and secrets-backend
        # round) per consent.
        from airflow.models import Variable as DbVariable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        by_key = {self.key(conn_id, c): c for c in ids}
        found: dict[str, ConsentRecord] = {}
        keys = list(by_key)
        with create_session() as session:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for var in session.scalars(select(DbVariable).where(DbVariable.key.in_(chunk))):
                    record = ConsentRecord.from_json(var.val, conn_id, by_key[var.key])
                    if record is not None:
                        found[record.consent_id] = record
        return found

    def consent_ids(self, conn_id: str) -> list[str]:
        ids = set(self._read_index(conn_id))
        if DEFAULT_CONSENT_ID not in ids and self._get(self.key(conn_id)) is not None:
            ids.add(DEFAULT_CONSENT_ID)  # written by the token store of 0.x, before the index
        return sorted(ids)

    def save(self, record: ConsentRecord) -> ConsentRecord:
        warn_if_plaintext("the Variable consent store")
        old = self.load(*record.key)
        record.version = (old.version if old is not None else 0) + 1
        self._set(self.key(*record.key), record.to_json(), _DESCRIPTION)
        if old is None:
            self._change_index(record.conn_id, add=[record.consent_id])
        return record

    def save_many(self, records: Iterable[ConsentRecord]) -> int:
        warn_if_plaintext("the Variable consent store")
        items = list(records)
        if not items:
            return 0
        by_conn: dict[str, list[ConsentRecord]] = {}
        for record in items:
            by_conn.setdefault(record.conn_id, []).append(record)
        with self._session() as session:  # outside a task: all or nothing
            for conn_id, group in by_conn.items():
                old = self.load_many(conn_id, [r.consent_id for r in group])
                for record in group:
                    previous = old.get(record.consent_id)
                    record.version = (previous.version if previous is not None else 0) + 1
                    self._set(self.key(*record.key), record.to_json(), _DESCRIPTION, session)
                ids = set(self._read_index(conn_id)) | {r.consent_id for r in group}
                self._write_index(conn_id, ids, session)
        return len(items)

    def compare_and_swap(self, record: ConsentRecord, expected_version: int) -> bool:
        warn_if_plaintext("the Variable consent store")
        key = self.key(*record.key)
        raw = self._get(key)
        stored = ConsentRecord.from_json(raw, *record.key) if raw else None
        if (stored.version if stored is not None else 0) != expected_version:
            return False
        record.version = expected_version + 1
        text = record.to_json()
        self._set(key, text, _DESCRIPTION)
        if self.settle_seconds:
            time.sleep(self.settle_seconds)
        if self._get(key) != text:  # another writer overwrote it meanwhile
            return False
        if stored is None or stored.version == 0:  # new, or written by 0.x (before the index)
            self._change_index(record.conn_id, add=[record.consent_id])
        return True

    def delete(self, conn_id: str, consent_id: str) -> None:
        key = self.key(conn_id, consent_id)
        if self._get(key) is not None:
            self._delete(key)
        if consent_id in self._read_index(conn_id):
            self._change_index(conn_id, remove=[consent_id])

    @property
    def encrypted(self) -> bool:
        return fernet_key_configured()

    def describe(self, conn_id: str, consent_id: str | None = None) -> str:
        if consent_id is None:
            return f"Airflow Variables {self.key(conn_id)!r}, {self.key(conn_id, '<consent_id>')!r}"
        return f"Airflow Variable {self.key(conn_id, consent_id)!r}"


__all__ = ["INDEX_PREFIX", "VariableConsentStore", "fernet_key_configured", "in_task_context"]
