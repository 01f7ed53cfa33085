"""Landing records in object storage: deterministic paths, written atomically, read back by one reader.

Layout (every segment made safe by :func:`safe_segment`; ``<ext>`` is the file format's)::

    <destination>/<dataset>/conn_id=<conn_id>/consent_id=<consent_id>/interval=<start>_<end>/account_id=<account_id>.<ext>
    <destination>/<dataset>/conn_id=<conn_id>/consent_id=<consent_id>/interval=<start>_<end>/<dataset>.<ext>  (no account)
    <destination>/statement_files/conn_id=<conn_id>/consent_id=<consent_id>/interval=<start>_<end>/account_id=<id>/<statement_id>.pdf
    <destination>/providers/conn_id=<conn_id>/interval=<start>_<end>/providers.<ext>    (no consent)

File formats (:data:`FILE_FORMATS`; the operators' ``file_format``, else ``[openbanking]
file_format``, else :data:`DEFAULT_FILE_FORMAT`):

* ``jsonl.gz`` (default): gzip JSON Lines, one compact JSON object per line, compressed as it is
  written (level :data:`GZIP_LEVEL`: 8-11x smaller than plain JSON Lines for 1.1-1.2x its CPU, see
  ``benchmarks/RESULTS.md``). Every gzip and JSON reader takes it as it is.
* ``jsonl``: plain JSON Lines.
* ``parquet``: Parquet (zstd) with an explicit Arrow schema per dataset
  (:mod:`~airflow_provider_openbanking.schemas`; fields without a column kept in one JSON column),
  row groups written as pages arrive. Needs the ``[parquet]`` extra (pyarrow), imported only then.

A rerun replaces the window's file, and when it lands another format it also removes the file of
the same name in the other formats once the new one is in place: one window, one file, whatever
the format of each run (a reader globbing ``*.jsonl.gz`` plus ``*.parquet`` never counts a window
twice). Read any of them with :func:`iter_records` / :func:`read_records`: the format is taken from
the file's first bytes, and records come back as JSON-shaped dicts whatever the format.

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
(``.<name>.<random>-<pid>-<host>.partial``: hidden, and matching none of the formats' suffixes) which is
renamed into place once complete. A reader never sees half a file, a rerun replaces the file
instead of adding one, and a task killed mid-write leaves nothing at the final path: its stale
``.partial`` is removed by the next write of the same file -- at once when the writer process is
known dead (same host), else once it is :data:`STALE_PARTIAL_SECONDS` old -- while the
``.partial`` of a writer still at work (a concurrent run of the same interval) is left alone. Records are encoded and written one by one (in 256 KiB chunks),
so memory stays flat whatever the number of records.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import os
import re
import socket
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_openbanking.schemas import RecordBatcher

log = logging.getLogger(__name__)

JSONL_SUFFIX = ".jsonl"
PARTIAL_SUFFIX = ".partial"
#: ``file_format`` values and the suffix each gives the landed files.
FORMAT_SUFFIXES: dict[str, str] = {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "parquet": ".parquet"}
FILE_FORMATS: tuple[str, ...] = tuple(FORMAT_SUFFIXES)
DEFAULT_FILE_FORMAT = "jsonl.gz"
#: zlib level of ``jsonl.gz``: the lowest that lands the sandbox's transactions in fewer bytes than
#: dlt's gzip JSON Lines, at 1.1-1.2x the CPU of plain JSON Lines (``benchmarks/formats.py``).
GZIP_LEVEL = 3
#: Rows per Parquet row group: converted to Arrow as pages arrive, written out every this many
#: rows, so a writer holds at most one row group (~2 MB) whatever the number of records. 32,768
#: compressed 2% better but grew peak RSS by ~20 MB from 10k to 1M transactions (the target is 15).
PARQUET_ROW_GROUP_ROWS = 8_192
#: Records converted to Arrow at a time (a page or two of the API).
PARQUET_BATCH_ROWS = 1_024
PARQUET_COMPRESSION = "zstd"
PARQUET_EXTRA_HINT = "pip install 'airflow-provider-openbanking[parquet]'"
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


def resolve_file_format(file_format: str | None = None) -> str:
    """``file_format`` checked (case and a leading dot ignored), or ``[openbanking] file_format``
    (``AIRFLOW__OPENBANKING__FILE_FORMAT``) when it is None or empty, else :data:`DEFAULT_FILE_FORMAT`.

    Raises ``ValueError`` naming the accepted values (and the option, for a bad configuration).
    """
    source = "file_format"
    value = file_format
    if value is None or (isinstance(value, str) and not value.strip()):
        source = "[openbanking] file_format"
        try:
            from airflow.configuration import conf

            value = conf.get("openbanking", "file_format", fallback=None)
        except Exception:  # pragma: no cover - configuration not importable
            value = None
        if value is None or not str(value).strip():
            return DEFAULT_FILE_FORMAT
    if not isinstance(value, str):
        raise ValueError(f"{source} must be a string, one of {', '.join(FILE_FORMATS)}; got {value!r}")
    text = value.strip().lower().lstrip(".")
    if text not in FORMAT_SUFFIXES:
        raise ValueError(
            f"{source}={value!r} is not a landing file format: use one of {', '.join(FILE_FORMATS)}"
        )
    return text


def file_format_of(path: ObjectStoragePath | str) -> str | None:
    """The format a file name's suffix stands for (``None`` for any other name)."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    for fmt, suffix in sorted(FORMAT_SUFFIXES.items(), key=lambda item: -len(item[1])):
        if name.endswith(suffix) and len(name) > len(suffix):
            return fmt
    return None


def other_format_names(name: str) -> list[str]:
    """The names the file ``name`` would have in the other formats (``a.jsonl.gz`` ->
    ``a.jsonl``, ``a.parquet``): what a write of ``name`` supersedes."""
    fmt = file_format_of(name)
    if fmt is None:
        return []
    stem = name[: -len(FORMAT_SUFFIXES[fmt])]
    return [stem + suffix for other, suffix in FORMAT_SUFFIXES.items() if other != fmt]


def require_pyarrow() -> None:
    """Raise ``ImportError`` saying how to install pyarrow when it is missing (Parquet needs it)."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"file_format='parquet' needs pyarrow, which is not installed: {PARQUET_EXTRA_HINT}"
        ) from exc


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
    ``file_format`` (see :func:`resolve_file_format`) sets the suffix of :meth:`records_file`.
    """

    def __init__(
        self,
        destination: ObjectStoragePath,
        dataset: str,
        conn_id: str,
        interval_start: dt.datetime,
        interval_end: dt.datetime,
        consent_id: str | None = None,
        file_format: str | None = None,
    ) -> None:
        self.destination = destination
        self.dataset = dataset
        self.conn_id = conn_id
        self.consent_id = consent_id
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.interval = interval_segment(interval_start, interval_end)
        self.file_format = resolve_file_format(file_format)

    def for_consent(self, consent_id: str) -> Layout:
        """The same layout for one consent of the connection."""
        return Layout(
            self.destination,
            self.dataset,
            self.conn_id,
            self.interval_start,
            self.interval_end,
            consent_id,
            self.file_format,
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
        """The records file of the dataset (of one account when ``account_id`` is given)."""
        suffix = FORMAT_SUFFIXES[self.file_format]
        if account_id is None:
            return self._dir(self.dataset) / f"{safe_segment(self.dataset)}{suffix}"
        return self._dir(self.dataset) / f"account_id={safe_segment(account_id)}{suffix}"

    def batch_file(self, batch: str) -> ObjectStoragePath:
        """One file of the dataset for a whole batch of consents (a shard's consent health records),
        beside the per-consent folders: ``<dataset>/conn_id=…/interval=…/<batch>.<ext>``."""
        if self.consent_id is not None:
            raise ValueError("a batch file belongs to the connection, not to one consent")
        return self._dir(self.dataset) / f"{_batch_name(batch)}{FORMAT_SUFFIXES[self.file_format]}"

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
    at ``path`` (an earlier file there stays untouched); on success it replaces ``path``, then
    removes the siblings named in ``replaces`` (the same file in another format) if there were any.
    """

    def __init__(self, path: ObjectStoragePath, replaces: Sequence[str] = ()) -> None:
        self.path = path
        self.bytes_written = 0
        self._replaces = frozenset(replaces)
        self._superseded: list[str] = []
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
            if name in self._replaces:
                self._superseded.append(str(entry))
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
            self._fh.flush()  # each chunk reaches the store now (a local file's 8 KiB buffer too)
            self._buffer.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._fail()
            return
        try:
            self._finish()
        except BaseException:
            self._fail()
            raise
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
        for entry in self._superseded:  # only once the new file is in place: never no file
            try:
                self._fs.rm(entry)
                log.info("Removed %s: %s replaces it", entry.rsplit("/", 1)[-1], self.path.name)
            except FileNotFoundError:
                pass

    def _finish(self) -> None:
        """Write what a subclass still holds (a compressor's tail, a Parquet footer): called on
        success, before the object is closed and renamed into place."""

    def _abandon(self) -> None:
        """Drop what a subclass still holds, writing nothing more: called on failure."""

    def _fail(self) -> None:
        """Give up: nothing of this write becomes visible (an earlier file stays untouched)."""
        self._abandon()
        self._buffer.clear()
        if self._fh is not None:
            self._close_quietly()
            self._discard()

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


class RecordRefusedError(AirflowFailException, ValueError):
    """A record that cannot take its dataset's Parquet schema: the file is not landed (nothing of
    it becomes visible). Names the dataset, the account, the field and the value's type (never the
    value). An ``AirflowFailException``: fetching the same data again cannot fix it."""

    def __init__(self, message: str, *, dataset: str, account_id: str | None, field: str, value_type: str):
        super().__init__(message)
        self.dataset, self.account_id, self.field, self.value_type = dataset, account_id, field, value_type


class JsonLinesWriter(AtomicWriter):
    """An :class:`AtomicWriter` of JSON Lines: one compact JSON object per line."""

    file_format = "jsonl"

    def __init__(self, path: ObjectStoragePath, replaces: Sequence[str] | None = None) -> None:
        super().__init__(path, other_format_names(path.name) if replaces is None else replaces)
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


class GzipJsonLinesWriter(JsonLinesWriter):
    """JSON Lines compressed as they are written (one gzip member; ``.jsonl.gz``).

    ``write`` takes uncompressed bytes; ``bytes_written`` counts what lands (compressed),
    ``raw_bytes`` what was given.
    """

    file_format = "jsonl.gz"

    def __init__(
        self, path: ObjectStoragePath, replaces: Sequence[str] | None = None, level: int = GZIP_LEVEL
    ) -> None:
        super().__init__(path, replaces)
        self.raw_bytes = 0
        self._zbuffer = bytearray()
        # wbits 31: a gzip container (header + CRC-32 trailer), readable by gzip/zcat/DuckDB/Spark
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def __enter__(self) -> GzipJsonLinesWriter:
        super().__enter__()
        return self

    def write(self, data: bytes) -> None:
        self._zbuffer += data
        self.raw_bytes += len(data)
        if len(self._zbuffer) >= _FLUSH_BYTES:
            # a sync flush every chunk: what was written so far reaches the store (zlib would
            # otherwise hold up to its window), for ~5 bytes per 256 KiB of JSON Lines
            compressed = self._compressor.compress(bytes(self._zbuffer)) + self._compressor.flush(
                zlib.Z_SYNC_FLUSH
            )
            self._zbuffer.clear()
            if compressed:
                AtomicWriter.write(self, compressed)

    def _finish(self) -> None:
        tail = self._compressor.compress(bytes(self._zbuffer)) + self._compressor.flush()
        self._zbuffer.clear()
        AtomicWriter.write(self, tail)

    def _abandon(self) -> None:
        self._zbuffer.clear()


class _WriterSink(io.RawIOBase):
    """A write-only file object over an :class:`AtomicWriter` (what pyarrow's writer needs)."""

    def __init__(self, writer: AtomicWriter) -> None:
        super().__init__()
        self._writer = writer
        #: Set when the file is being discarded: later writes (a footer) go nowhere.
        self.discarding = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if not self.discarding:
            self._writer.write(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._writer.bytes_written

    def close(self) -> None:  # the AtomicWriter decides when the object is closed
        pass


class ParquetRecordsWriter(AtomicWriter):
    """Records of one dataset into a Parquet file (``.parquet``), atomically, with the dataset's
    Arrow schema (:func:`~airflow_provider_openbanking.schemas.arrow_schema`).

    Records are converted to Arrow every :data:`PARQUET_BATCH_ROWS` and a row group is written
    every :data:`PARQUET_ROW_GROUP_ROWS`, so memory stays flat. A record that cannot take the
    schema raises :class:`RecordRefusedError` and nothing lands.
    """

    file_format = "parquet"

    def __init__(
        self,
        path: ObjectStoragePath,
        dataset: str,
        account_id: str | None = None,
        replaces: Sequence[str] | None = None,
    ) -> None:
        require_pyarrow()
        from airflow_provider_openbanking.schemas import RecordBatcher

        super().__init__(path, other_format_names(path.name) if replaces is None else replaces)
        self.dataset = dataset
        self.account_id = account_id
        self.records = 0
        self._batcher: RecordBatcher = RecordBatcher(dataset)
        self._pending: list[Mapping[str, Any]] = []
        self._batches: list[Any] = []
        self._batched_rows = 0
        self._pq_writer: Any = None
        self._sink: _WriterSink | None = None

    def __enter__(self) -> ParquetRecordsWriter:
        super().__enter__()
        return self

    def write_record(self, record: Mapping[str, Any]) -> None:
        self._pending.append(record)
        self.records += 1
        if len(self._pending) >= PARQUET_BATCH_ROWS:
            self._convert()

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> int:
        for record in records:
            self.write_record(record)
        return self.records

    def _convert(self) -> None:
        from airflow_provider_openbanking.schemas import RecordTypeError

        if not self._pending:
            return
        first = self.records - len(self._pending)
        try:
            batch = self._batcher.to_batch(self._pending, first)
        except RecordTypeError as exc:
            account = self.account_id or self._pending[exc.index - first].get("accountId")
            whose = f" of account {account!r}" if account else ""
            raise RecordRefusedError(
                f"{exc.dataset}{whose} refused, nothing of it landed: {exc}",
                dataset=exc.dataset,
                account_id=str(account) if account else None,
                field=exc.field,
                value_type=exc.value_type,
            ) from None
        self._pending = []
        self._batches.append(batch)
        self._batched_rows += batch.num_rows
        if self._batched_rows >= PARQUET_ROW_GROUP_ROWS:
            self._write_row_group()

    def _write_row_group(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._pq_writer is None:
            self._sink = _WriterSink(self)
            from airflow_provider_openbanking.schemas import dictionary_columns

            self._pq_writer = pq.ParquetWriter(
                self._sink,
                self._batcher.schema,
                compression=PARQUET_COMPRESSION,
                use_dictionary=dictionary_columns(self.dataset),
            )
        if self._batches:
            table = pa.Table.from_batches(self._batches, schema=self._batcher.schema)
            self._pq_writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._batches, self._batched_rows = [], 0

    def _finish(self) -> None:
        self._convert()
        self._write_row_group()  # also an empty file's schema and footer
        self._pq_writer.close()

    def _abandon(self) -> None:
        """Drop what is buffered and close the Parquet writer without writing anything more."""
        self._pending, self._batches = [], []
        if self._pq_writer is not None and self._sink is not None:
            self._sink.discarding = True
            try:
                self._pq_writer.close()
            except Exception:
                log.debug("Could not close the Parquet writer of %s", self.path, exc_info=True)


def _dataset_of(path: ObjectStoragePath) -> str:
    """The dataset of a :class:`Layout` path (``<dataset>/conn_id=…/interval=…/<file>``), else the
    file's stem."""
    parts = str(path.path).rstrip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("conn_id=") and i > 0:
            return parts[i - 1]
    name = parts[-1]
    fmt = file_format_of(name)
    return name[: -len(FORMAT_SUFFIXES[fmt])] if fmt else name


def open_records_writer(
    path: ObjectStoragePath, dataset: str | None = None, *, account_id: str | None = None
) -> JsonLinesWriter | ParquetRecordsWriter:
    """The writer for ``path``'s format (from its suffix: ``.jsonl.gz``, ``.parquet``, else plain
    JSON Lines). ``dataset`` picks the Parquet schema (default: read from the path);
    ``account_id`` is named in a refusal."""
    fmt = file_format_of(path) or "jsonl"
    if fmt == "parquet":
        return ParquetRecordsWriter(path, dataset or _dataset_of(path), account_id)
    if fmt == "jsonl.gz":
        return GzipJsonLinesWriter(path)
    return JsonLinesWriter(path)


def write_records(
    path: ObjectStoragePath, records: Iterable[Mapping[str, Any]], dataset: str | None = None
) -> int:
    """Stream ``records`` to ``path`` atomically, in the format its suffix names; return how many
    were written."""
    with open_records_writer(path, dataset) as writer:
        return writer.write_records(records)


def write_jsonl(path: ObjectStoragePath, records: Iterable[Mapping[str, Any]]) -> int:
    """Kept for callers of the JSON Lines era: :func:`write_records` (the suffix picks the format)."""
    return write_records(path, records)


def _as_path(path: ObjectStoragePath | str) -> ObjectStoragePath:
    return path if isinstance(path, ObjectStoragePath) else ObjectStoragePath(str(path))


try:
    _decode_line: Any = msgspec.json.decode
except NameError:  # pragma: no cover - no msgspec
    _decode_line = json.loads


def _iter_lines(fh: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in fh:
        if line.strip():
            yield _decode_line(line)


def iter_records(path: ObjectStoragePath | str) -> Iterator[dict[str, Any]]:
    """Stream the records of a landed file, whatever its format: plain JSON Lines, gzip JSON Lines
    or Parquet (told apart by the file's first bytes, not its name). The one reader of the
    project: the warehouse load, the example DAGs, the demo and the tests read through it.

    Records come back as JSON-shaped dicts in every format (Parquet timestamps as ISO 8601 UTC
    strings, dates as ``YYYY-MM-DD``, the JSON columns decoded), one batch in memory at a time.
    """
    target = _as_path(path)
    with target.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=fh, mode="rb") as unzipped:
                yield from _iter_lines(unzipped)
        elif magic == b"PAR1":
            try:
                require_pyarrow()
            except ImportError as exc:
                raise ImportError(
                    f"{target} is a Parquet file; reading it needs pyarrow: {PARQUET_EXTRA_HINT}"
                ) from exc
            import pyarrow.parquet as pq

            from airflow_provider_openbanking.schemas import batch_to_records

            parquet = pq.ParquetFile(fh)
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS * 8):
                yield from batch_to_records(batch)
        else:
            yield from _iter_lines(fh)


def read_records(path: ObjectStoragePath | str) -> list[dict[str, Any]]:
    """Every record of a landed file, in any format (see :func:`iter_records`), as a list."""
    return list(iter_records(path))


# -- destination probe (issue 15) ---------------------------------------------------------------

#: Name prefix of the probe object: hidden, and never matching ``*.jsonl`` nor ``*.partial``.
PROBE_PREFIX = ".openbanking-write-probe-"


def check_destination_writable(destination: ObjectStoragePath | str | None) -> ObjectStoragePath:
    """Prove that ``destination`` can be written, before any API call: create, write and delete a
    small probe object in it. Return the destination as an ``ObjectStoragePath``.

    Raises :class:`~airflow_provider_openbanking.exceptions.LandingDestinationError` (which fails
    the task at its first try: no retry makes a read-only bucket writable) naming the destination
    and what went wrong -- a path under a regular file, ``/proc``, a read-only or missing bucket,
    missing storage credentials. On the local file system, directories the probe had to create are
    removed again, so a task that fails later for another reason leaves nothing behind.
    """
    from airflow_provider_openbanking.exceptions import LandingDestinationError

    try:  # an unknown scheme, a provider missing for it: no retry installs the provider
        target = to_storage_path(destination)
        fs: Any = target.fs
    except Exception as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise LandingDestinationError(
            str(destination), f"could not open it ({type(exc).__name__}: {reason})"
        ) from None
    shown = str(target)
    local = (target.protocol or "file") in ("file", "local")
    root = str(target.path)
    probe = f"{root.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex[:12]}-{os.getpid()}"
    created: list[str] = []
    step = "create the directory"
    try:
        if local:
            missing = root
            while missing and missing != "/" and not os.path.lexists(missing):
                created.append(missing)
                missing = os.path.dirname(missing)
            fs.makedirs(root, exist_ok=True)
        step = "write a probe object"
        with fs.open(probe, "wb") as fh:
            fh.write(b"airflow-provider-openbanking write probe\n")
        step = "delete the probe object"
        fs.rm(probe)
    except Exception as exc:
        if step != "create the directory":
            try:
                fs.rm(probe)
            except Exception:
                log.debug("Could not remove the probe %s", probe, exc_info=True)
        reason = str(exc).strip() or type(exc).__name__
        raise LandingDestinationError(shown, f"could not {step} ({type(exc).__name__}: {reason})") from None
    finally:
        for directory in created:  # deepest first; only if still empty
            try:
                os.rmdir(directory)
            except OSError:
                break
    return target


def read_jsonl(path: ObjectStoragePath | str) -> list[dict[str, Any]]:
    """Kept for callers of the JSON Lines era: :func:`read_records` (any format)."""
    return read_records(path)


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
    "DEFAULT_FILE_FORMAT",
    "FILE_FORMATS",
    "PROBE_PREFIX",
    "AtomicWriter",
    "GzipJsonLinesWriter",
    "JsonLinesWriter",
    "Layout",
    "ParquetRecordsWriter",
    "RecordRefusedError",
    "check_destination_writable",
    "default_destination",
    "encode_record",
    "file_format_of",
    "interval_segment",
    "iter_records",
    "lineage_dataset",
    "open_records_writer",
    "other_format_names",
    "read_jsonl",
    "read_records",
    "require_pyarrow",
    "resolve_file_format",
    "safe_segment",
    "to_storage_path",
    "write_jsonl",
    "write_records",
]
