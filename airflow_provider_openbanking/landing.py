"""Landing records in object storage: JSON Lines at deterministic paths, written atomically.

Layout (every segment made safe by :func:`safe_segment`)::

    <destination>/<dataset>/conn_id=<conn_id>/consent_id=<consent_id>/interval=<start>_<end>/account_id=<account_id>.jsonl
    <destination>/<dataset>/conn_id=<conn_id>/consent_id=<consent_id>/interval=<start>_<end>/<dataset>.jsonl  (no account)
    <destination>/statement_files/conn_id=<conn_id>/consent_id=<consent_id>/interval=<start>_<end>/account_id=<id>/<statement_id>.pdf
    <destination>/providers/conn_id=<conn_id>/interval=<start>_<end>/providers.jsonl    (no consent)

``<start>``/``<end>`` are the run's data interval in UTC (``20261119T000000Z``). The ``key=value``
directories are Hive-style partitions, so DuckDB/Spark/pandas readers pick the columns up. The
consent comes right after the connection so that everything landed for one customer is one prefix
(``…/conn_id=C/consent_id=K/``): erasing a customer's data is one recursive delete.

Bookkeeping of batched runs lives outside the datasets, under ``<destination>/_manifests/``, so a
reader globbing ``<dataset>/**/*.jsonl`` only ever sees data::

    <destination>/_manifests/<dataset>/conn_id=<conn_id>/interval=<start>_<end>/consent_id=<id>.json  (one consent done)
    <destination>/_manifests/<dataset>/conn_id=<conn_id>/interval=<start>_<end>/<batch>.jsonl        (one task's files)

The destination is an :class:`~airflow.sdk.ObjectStoragePath` or a URL string (``s3://…`` and
``gs://…`` work when the matching provider is installed; a bare path means the local file system).
When none is given, ``[openbanking] landing_destination`` from the Airflow configuration (or the
``AIRFLOW__OPENBANKING__LANDING_DESTINATION`` environment variable) is used, else
``file://$AIRFLOW_HOME/openbanking``.

Writes are atomic: records stream into a temporary object beside the final one
(``.<name>.<random>-<pid>-<host>.partial``: hidden, and not matching ``*.jsonl``) which is
renamed into place once complete. A reader never sees half a file, a rerun replaces the file
instead of adding one, and a task killed mid-write leaves nothing at the final path: its stale
``.partial`` is removed by the next write of the same file -- at once when the writer process is
known dead (same host), else once it is :data:`STALE_PARTIAL_SECONDS` old -- while the
``.partial`` of a writer still at work (a concurrent run of the same interval) is left alone. Records are encoded and written one by one (in 256 KiB chunks),
so memory stays flat whatever the number of records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

JSONL_SUFFIX = ".jsonl"
PARTIAL_SUFFIX = ".partial"
#: Encoded segments longer than this are shortened and suffixed with a hash of the original.
MAX_SEGMENT_LENGTH = 150
#: A ``.partial`` whose writer cannot be checked (another host) counts as abandoned at this age.
STALE_PARTIAL_SECONDS = 3600.0
_FLUSH_BYTES = 256 * 1024

try:  # msgspec ships with the Task SDK and encodes ~3x faster than json
    import msgspec

    _encoder = msgspec.json.Encoder()

    def encode_record(record: Any) -> bytes:
        """One JSON document (no newline) for one record."""
        try:
            return _encoder.encode(record)
        except (TypeError, msgspec.EncodeError):
            return _json_encode(record)

except ImportError:  # pragma: no cover

    def encode_record(record: Any) -> bytes:
        """One JSON document (no newline) for one record."""
        return _json_encode(record)


def _json_encode(record: Any) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def safe_segment(value: Any) -> str:
    """Make ``value`` one path segment that cannot escape its directory nor collide with another.

    Everything but ``A-Z a-z 0-9 _ . - ~`` is percent-encoded (``%`` included, so the mapping is
    one-to-one), a leading dot is encoded too (no ``.``/``..``, no hidden names that would clash
    with temporary files), and very long values are shortened with a hash of the original.
    """
    text = str(value)
    if not text:
        raise ValueError("an empty string cannot be a path segment")
    out = quote(text, safe="")
    if out.startswith("."):
        out = "%2E" + out[1:]
    if len(out) > MAX_SEGMENT_LENGTH:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        head = out[: MAX_SEGMENT_LENGTH - 20]
        cut = head.rfind("%", len(head) - 2)
        if cut != -1:  # do not split a %XX escape
            head = head[:cut]
        # "%~" never comes out of percent-encoding, so a shortened name cannot equal a plain one
        out = f"{head}%~{digest}"
    return out


def interval_segment(start: dt.datetime, end: dt.datetime) -> str:
    """``20261119T000000Z_20261120T000000Z``: the data interval, in UTC, safe in any store."""

    def fmt(value: dt.datetime) -> str:
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    return f"{fmt(start)}_{fmt(end)}"


def default_destination() -> ObjectStoragePath:
    """``[openbanking] landing_destination`` or ``file://$AIRFLOW_HOME/openbanking``."""
    configured: str | None = None
    try:
        from airflow.configuration import conf

        configured = conf.get("openbanking", "landing_destination", fallback=None)
    except Exception:  # pragma: no cover - configuration not importable
        configured = None
    if configured:
        return to_storage_path(configured)
    try:
        from airflow.configuration import AIRFLOW_HOME as home
    except ImportError:  # pragma: no cover
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return to_storage_path(os.path.join(home, "openbanking"))


def to_storage_path(destination: ObjectStoragePath | str | os.PathLike[str] | None) -> ObjectStoragePath:
    """Turn the operator's ``destination`` into an ``ObjectStoragePath`` (None -> the default)."""
    if destination is None or destination == "":
        return default_destination()
    if isinstance(destination, ObjectStoragePath):
        if destination.protocol:
            return destination
        return ObjectStoragePath("file://" + os.path.abspath(str(destination.path)))
    text = os.fspath(destination)
    if "://" not in text:
        return ObjectStoragePath("file://" + os.path.abspath(os.path.expanduser(text)))
    return ObjectStoragePath(text)


MANIFESTS_DIR = "_manifests"
_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9=._-]{0,120}$")


def _batch_name(name: str) -> str:
    """A batch name (``shard=0003-of-0034``) as a file name: kept readable, so checked, not encoded."""
    if not _BATCH_NAME.match(name):
        raise ValueError(f"not a batch name: {name!r}")
    return name


class Layout:
    """Deterministic paths of one (destination, dataset, connection, consent, data interval).

    ``consent_id=None`` is for datasets that belong to the client, not to a customer (providers).
    """

    def __init__(
        self,
        destination: ObjectStoragePath,
        dataset: str,
        conn_id: str,
        interval_start: dt.datetime,
        interval_end: dt.datetime,
        consent_id: str | None = None,
    ) -> None:
        self.destination = destination
        self.dataset = dataset
        self.conn_id = conn_id
        self.consent_id = consent_id
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.interval = interval_segment(interval_start, interval_end)

    def for_consent(self, consent_id: str) -> Layout:
        """The same layout for one consent of the connection."""
        return Layout(
            self.destination, self.dataset, self.conn_id, self.interval_start, self.interval_end, consent_id
        )

    def _dir(self, dataset: str) -> ObjectStoragePath:
        base = self.destination / safe_segment(dataset) / f"conn_id={safe_segment(self.conn_id)}"
        if self.consent_id is not None:
            base = base / f"consent_id={safe_segment(self.consent_id)}"
        return base / f"interval={self.interval}"

    def _manifest_dir(self) -> ObjectStoragePath:
        return (
            self.destination
            / MANIFESTS_DIR
            / safe_segment(self.dataset)
            / f"conn_id={safe_segment(self.conn_id)}"
            / f"interval={self.interval}"
        )

    def consent_marker(self, consent_id: str | None = None) -> ObjectStoragePath:
        """Where a batched task records that one consent's files for the interval are complete."""
        consent = consent_id if consent_id is not None else self.consent_id
        if consent is None:
            raise ValueError("consent_marker needs a consent id")
        return self._manifest_dir() / f"consent_id={safe_segment(consent)}.json"

    def batch_manifest(self, batch: str) -> ObjectStoragePath:
        """The list of every file one batched task (one shard) landed for the interval."""
        return self._manifest_dir() / f"{_batch_name(batch)}{JSONL_SUFFIX}"

    def records_file(self, account_id: str | None = None) -> ObjectStoragePath:
        """The JSON Lines file of the dataset (of one account when ``account_id`` is given)."""
        if account_id is None:
            return self._dir(self.dataset) / f"{safe_segment(self.dataset)}{JSONL_SUFFIX}"
        return self._dir(self.dataset) / f"account_id={safe_segment(account_id)}{JSONL_SUFFIX}"

    def batch_file(self, batch: str) -> ObjectStoragePath:
        """One file of the dataset for a whole batch of consents (a shard's consent health records),
        beside the per-consent folders: ``<dataset>/conn_id=…/interval=…/<batch>.jsonl``."""
        if self.consent_id is not None:
            raise ValueError("a batch file belongs to the connection, not to one consent")
        return self._dir(self.dataset) / f"{_batch_name(batch)}{JSONL_SUFFIX}"

    def blob_file(self, dataset: str, account_id: str, name: str, extension: str) -> ObjectStoragePath:
        """A binary file (a statement PDF) of one account."""
        return (
            self._dir(dataset) / f"account_id={safe_segment(account_id)}" / f"{safe_segment(name)}{extension}"
        )


def _host_id() -> str:
    """A short id of this host for temporary names (no separator, no dot)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:10]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


class AtomicWriter:
    """Write bytes to ``path`` through a temporary sibling renamed into place on success.

    Use as a context manager. On an exception the temporary object is removed and nothing appears
    at ``path`` (an earlier file there stays untouched); on success it replaces ``path``.
    """

    def __init__(self, path: ObjectStoragePath) -> None:
        self.path = path
        self.bytes_written = 0
        self._fs: Any = path.fs
        owner = f"{uuid.uuid4().hex[:12]}-{os.getpid()}-{_host_id()}"
        self._tmp_path = f"{path.parent.path.rstrip('/')}/.{path.name}.{owner}{PARTIAL_SUFFIX}"
        self._fh: Any = None
        self._buffer = bytearray()

    def __enter__(self) -> AtomicWriter:
        return self

    def _open(self) -> None:
        """Create the temporary object (on the first write: a fetch that fails before any record
        arrives leaves no trace, not even a directory)."""
        parent = self.path.parent.path
        self._fs.makedirs(parent, exist_ok=True)
        self._remove_stale_partials(parent)
        self._fh = self._fs.open(self._tmp_path, "wb")

    def _remove_stale_partials(self, parent: str) -> None:
        """Delete what a killed earlier attempt left for the same final file (never the
        ``.partial`` of another writer still at work: see the module docstring)."""
        prefix = f".{self.path.name}."
        try:
            entries = self._fs.ls(parent, detail=False)
        except (FileNotFoundError, NotImplementedError):
            return
        for entry in entries:
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX):
                if not self._abandoned(entry, name[len(prefix) : -len(PARTIAL_SUFFIX)]):
                    log.info("Leaving %s alone: another writer of the same file is at work", name)
                    continue
                try:
                    self._fs.rm(entry)
                    log.info("Removed a partial file left by an interrupted run: %s", name)
                except FileNotFoundError:
                    pass

    def _abandoned(self, entry: str, owner: str) -> bool:
        """Whether the ``.partial`` ``entry`` (written by ``owner``) was left by a dead writer."""
        _, _, rest = owner.partition("-")
        pid, _, host = rest.partition("-")
        if pid.isdigit() and host == _host_id():
            return not _process_alive(int(pid))
        try:
            modified = self._fs.modified(entry)
        except Exception:  # the store cannot tell: keep it (hidden, and readers ignore it)
            return False
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=dt.timezone.utc)
        return (dt.datetime.now(dt.timezone.utc) - modified).total_seconds() > STALE_PARTIAL_SECONDS

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.bytes_written += len(data)
        if len(self._buffer) >= _FLUSH_BYTES:
            if self._fh is None:
                self._open()
            self._fh.write(bytes(self._buffer))
            self._buffer.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._buffer.clear()
            if self._fh is not None:
                self._close_quietly()
                self._discard()
            return
        try:
            if self._fh is None:
                self._open()  # an empty result still lands (an empty file replaces an older one)
            if self._buffer:
                self._fh.write(bytes(self._buffer))
                self._buffer.clear()
            self._fh.close()
        except BaseException:
            self._close_quietly()
            self._discard()
            raise
        try:
            self._fs.mv(self._tmp_path, self.path.path)
        except BaseException:
            self._discard()
            raise

    def _close_quietly(self) -> None:
        try:
            self._fh.close()
        except Exception:
            log.debug("Could not close %s", self._tmp_path, exc_info=True)

    def _discard(self) -> None:
        try:
            self._fs.rm(self._tmp_path)
        except Exception:  # the temp object may not exist; never mask the original error
            log.debug("Could not remove %s", self._tmp_path, exc_info=True)


class JsonLinesWriter(AtomicWriter):
    """An :class:`AtomicWriter` of JSON Lines: one compact JSON object per line."""

    def __init__(self, path: ObjectStoragePath) -> None:
        super().__init__(path)
        self.records = 0

    def __enter__(self) -> JsonLinesWriter:
        super().__enter__()
        return self

    def write_record(self, record: Mapping[str, Any]) -> None:
        self.write(encode_record(record) + b"\n")
        self.records += 1

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> int:
        for record in records:
            self.write_record(record)
        return self.records


def write_jsonl(path: ObjectStoragePath, records: Iterable[Mapping[str, Any]]) -> int:
    """Stream ``records`` to ``path`` atomically; return how many were written."""
    with JsonLinesWriter(path) as writer:
        return writer.write_records(records)


def read_jsonl(path: ObjectStoragePath | str) -> list[dict[str, Any]]:
    """Read a landed file back (tests, small files)."""
    target = path if isinstance(path, ObjectStoragePath) else ObjectStoragePath(path)
    text = target.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def lineage_dataset(path: ObjectStoragePath | str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a landed file (``file`` + absolute path, or
    ``s3://bucket`` + key)."""
    target = path if isinstance(path, ObjectStoragePath) else ObjectStoragePath(path)
    protocol = target.protocol or "file"
    if protocol in ("file", "local"):
        return "file", "/" + str(target.path).lstrip("/")
    bucket = target.bucket
    return (f"{protocol}://{bucket}" if bucket else protocol), target.key


__all__ = [
    "AtomicWriter",
    "JsonLinesWriter",
    "Layout",
    "default_destination",
    "encode_record",
    "interval_segment",
    "lineage_dataset",
    "read_jsonl",
    "safe_segment",
    "to_storage_path",
    "write_jsonl",
]
