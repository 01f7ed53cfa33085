"""The consent store contract, and what every backend gets from it for free.

A store keeps :class:`~.record.ConsentRecord` objects keyed by (connection id, consent id). Four
operations are the backend's: :meth:`ConsentStore.load`, :meth:`ConsentStore.consent_ids`,
:meth:`ConsentStore.save` (unconditional upsert: imports and code exchanges),
:meth:`ConsentStore.compare_and_swap` (write only if the stored ``version`` is still the one the
writer read) and :meth:`ConsentStore.delete`. Batch reads and writes default to loops; backends
that can do better (one SQL query) override them.

Built on compare-and-swap:

- :meth:`ConsentStore.update` -- read, change, write back; retried when another process wrote in
  between, so a timestamp never overwrites a rotated refresh token;
- the **refresh lease** (:meth:`ConsentStore.acquire_lease`): the one process allowed to make the
  next refresh grant of a consent. Everyone else waits for the access token it stores, which is
  how N task processes of one consent make one refresh grant per access-token lifetime. A lease
  expires by itself (a process that died holding it blocks nobody for long).

How strong compare-and-swap is depends on the backend: atomic in SQL (``UPDATE … WHERE version
= ?``) and in memory (a lock); write-then-verify for Airflow Variables, which have no conditional
write (see :mod:`.variable`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

from airflow_provider_openbanking.consents.record import ConsentRecord, now_iso


class ConsentStoreError(RuntimeError):
    """The store cannot be used (unreachable, misconfigured, no encryption key)."""


class ConsentStore(ABC):
    """Where the consents of a connection live. Subclass it for a backend of your own and name the
    class in the connection's ``consent_store`` extra (dotted path); it is built with no arguments.
    """

    #: Short name shown by the CLI (``variable``, ``sql``, ``memory``, …).
    kind: str = "custom"

    # -- the backend's part ----------------------------------------------------------------------

    @abstractmethod
    def load(self, conn_id: str, consent_id: str) -> ConsentRecord | None:
        """The stored record, or None."""

    @abstractmethod
    def consent_ids(self, conn_id: str) -> list[str]:
        """Every stored consent id of ``conn_id``, sorted."""

    @abstractmethod
    def save(self, record: ConsentRecord) -> ConsentRecord:
        """Upsert ``record`` durably (whatever is stored); returns it with its new ``version``."""

    @abstractmethod
    def compare_and_swap(self, record: ConsentRecord, expected_version: int) -> bool:
        """Write ``record`` with ``version = expected_version + 1`` only if the stored record's
        version is ``expected_version`` (0: only if there is none). True when written; then
        ``record.version`` is the new version."""

    @abstractmethod
    def delete(self, conn_id: str, consent_id: str) -> None:
        """Forget the record (no error when there is none)."""

    # -- defaults a backend may override ---------------------------------------------------------

    def load_many(self, conn_id: str, consent_ids: Iterable[str]) -> dict[str, ConsentRecord]:
        """Records of ``consent_ids`` that exist, by consent id."""
        found: dict[str, ConsentRecord] = {}
        for consent_id in consent_ids:
            record = self.load(conn_id, consent_id)
            if record is not None:
                found[consent_id] = record
        return found

    def save_many(self, records: Iterable[ConsentRecord]) -> int:
        """Upsert every record (an import); returns how many. Backends make this all-or-nothing
        where they can (one transaction)."""
        count = 0
        for record in records:
            self.save(record)
            count += 1
        return count

    @property
    def encrypted(self) -> bool:
        """True when tokens are encrypted at rest (by this store or by Airflow beneath it)."""
        return False

    def describe(self, conn_id: str, consent_id: str | None = None) -> str:
        """Where a consent lives, for humans (no secret)."""
        return f"consent store {type(self).__name__}"

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections (idempotent)."""

    # -- built on compare-and-swap ---------------------------------------------------------------

    def update(
        self,
        conn_id: str,
        consent_id: str,
        change: Callable[[ConsentRecord | None], ConsentRecord | None],
        *,
        attempts: int = 20,
    ) -> ConsentRecord | None:
        """Read, ``change`` (None: write nothing), compare-and-swap; retried on a concurrent write.

        Returns the record written (or the one read when ``change`` returned None)."""
        for attempt in range(attempts):
            current = self.load(conn_id, consent_id)
            new = change(current)
            if new is None:
                return current
            if self.compare_and_swap(new, current.version if current is not None else 0):
                return new
            time.sleep(min(0.01 * (attempt + 1), 0.1))
        raise ConsentStoreError(
            f"could not update consent {consent_id!r} of {conn_id!r}: {attempts} concurrent writes in a row"
        )

    def stamp(self, conn_id: str, consent_id: str, **fields: object) -> ConsentRecord | None:
        """Set a few fields of an existing record (timestamps, last error); no-op when absent."""

        def change(record: ConsentRecord | None) -> ConsentRecord | None:
            if record is None:
                return None
            return record.replace(**fields)

        return self.update(conn_id, consent_id, change)

    def acquire_lease(
        self,
        conn_id: str,
        consent_id: str,
        owner: str,
        seconds: float,
        *,
        template: ConsentRecord | None = None,
    ) -> tuple[bool, ConsentRecord | None]:
        """Try once to become the process that makes the next refresh grant.

        Returns ``(True, record)`` when ``owner`` holds the lease, ``(False, record)`` when another
        process holds an unexpired one (``record`` is what was read: it may already carry a fresh
        access token). ``template`` is inserted when there is no record yet (the ``default``
        consent of a connection whose refresh token was never stored).
        """
        current = self.load(conn_id, consent_id)
        base = current if current is not None else template
        if base is None:
            return False, None
        now = time.time()
        if current is not None and not current.lease_free(owner, now):
            return False, current
        leased = base.replace(lease_owner=owner, lease_until=now + seconds)
        if self.compare_and_swap(leased, current.version if current is not None else 0):
            return True, leased
        return False, self.load(conn_id, consent_id)

    def release_lease(self, conn_id: str, consent_id: str, owner: str) -> None:
        """Give the lease back (a no-op when another process holds it now)."""

        def change(record: ConsentRecord | None) -> ConsentRecord | None:
            if record is None or record.lease_owner != owner:
                return None
            return record.replace(lease_owner=None, lease_until=None)

        self.update(conn_id, consent_id, change)


def touch(record: ConsentRecord) -> ConsentRecord:
    """``record`` with ``updated_at`` = now."""
    return record.replace(updated_at=now_iso())


__all__ = ["ConsentStore", "ConsentStoreError", "touch"]
