"""Real back-end services for tests, the e2e run and benchmarks: PostgreSQL, Redis, an S3 endpoint.

Each starter runs the machine's own server binary (Debian's ``postgresql`` and ``redis-server``,
installed with apt when absent; moto's standalone server from the venv) in a throw-away directory,
on a free port of 127.0.0.1 only, in a process group of its own. ``Service.stop()`` ends the whole
group; every service still running at interpreter exit is stopped too, so a failed or interrupted
run leaves nothing listening. Nothing here is provider code: it only gives the provider real peers.

Usage::

    with start_postgres(tmp_path) as pg:
        url = pg.create_database("warehouse")   # postgresql://airflow@127.0.0.1:PORT/warehouse
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PG_USER = "airflow"
_RUNNING: list[Service] = []


class ServiceError(RuntimeError):
    """A service could not be installed or started; the message says which and why."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


_APT_UPDATED = False


def apt_install(*packages: str) -> None:
    """Install Debian packages (as root, or through passwordless sudo); one ``apt-get update`` per run."""
    global _APT_UPDATED
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise ServiceError(f"need root or sudo to install {', '.join(packages)} with apt-get")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _APT_UPDATED:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
        _APT_UPDATED = True
    result = subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0:
        raise ServiceError(f"apt-get install {' '.join(packages)} failed:\n{result.stdout[-2000:]}")


class Service:
    """One running server: its URL, its process group, and how to stop it."""

    def __init__(self, name: str, url: str, port: int, proc: subprocess.Popen[bytes], workdir: Path) -> None:
        self.name = name
        self.url = url
        self.port = port
        self.proc = proc
        self.workdir = workdir
        self._stopped = False
        _RUNNING.append(self)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, url={self.url!r}, pid={self.proc.pid})"

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after ``timeout``."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(ValueError):
            _RUNNING.remove(self)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _stop_all() -> None:
    for service in list(_RUNNING):
        with contextlib.suppress(Exception):
            service.stop(timeout=5)


atexit.register(_stop_all)


def _spawn(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    port: int,
    url: str,
    ready: Callable[[], bool],
    timeout: float = 60.0,
    preexec: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    service_cls: type[Service] = Service,
    **extra: Any,
) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=preexec,
            env=env,
        )
    finally:
        log.close()
    service = service_cls(name, url, port, proc, workdir, **extra)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = service.log_tail()
            service.stop()
            raise ServiceError(f"{name} exited with {proc.returncode} on 127.0.0.1:{port}:\n{tail}")
        if ready():
            return service
        time.sleep(0.1)
    tail = service.log_tail()
    service.stop()
    raise ServiceError(f"{name} did not answer on 127.0.0.1:{port} within {timeout:.0f} s:\n{tail}")


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        apt_install("postgresql")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise ServiceError(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin after apt-get install"
        )
    return Path(found[-1]).parent


def _unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise ServiceError("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


def _chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, *ids)
        for entry in dirs + files:
            os.chown(os.path.join(root, entry), *ids)


class PostgresService(Service):
    """A PostgreSQL cluster (trust auth for ``airflow`` on loopback only)."""

    def __init__(self, *args: Any, bindir: Path, cluster: Path | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bindir = bindir
        self._own_cluster = cluster

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        if self._own_cluster is not None:
            shutil.rmtree(self._own_cluster, ignore_errors=True)

    def url_for(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by ``airflow``) and return its URL."""
        result = subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"createdb {name} on 127.0.0.1:{self.port} failed: {result.stdout.strip()}")
        return self.url_for(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql and return its unaligned, tuples-only output."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", database, "-c", sql],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"psql on 127.0.0.1:{self.port}/{database} failed: {result.stdout.strip()}")
        return result.stdout.strip()


def start_postgres(workdir: str | os.PathLike[str], *, port: int | None = None) -> PostgresService:
    """initdb into ``workdir/pgdata`` and start ``postgres`` on 127.0.0.1 (run as ``postgres`` when root)."""
    bindir = _pg_bindir()
    base = Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    ids = _unprivileged_user()
    # As root the server runs as another user, who may not traverse ``workdir``'s parents (pytest's
    # tmp dirs are 0700): its cluster then lives in a directory of its own, removed at stop.
    cluster = base if ids is None else Path(tempfile.mkdtemp(prefix="ob-pg-"))
    data, sockets = cluster / "pgdata", cluster / "pgsock"
    sockets.mkdir(exist_ok=True)
    _chown_tree(cluster, ids)
    preexec = None
    if ids is not None:
        uid, gid = ids

        def preexec() -> None:
            os.setgid(gid)
            os.setuid(uid)

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    if not (data / "PG_VERSION").exists():
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec,
            env=env,
            cwd=base,
        )
        if result.returncode != 0:
            raise ServiceError(f"initdb {data} failed:\n{result.stdout[-2000:]}")
    port = port or free_port()
    argv = [
        str(bindir / "postgres"), "-D", str(data), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        "-c", "max_connections=200", "-c", "shared_buffers=128MB",
    ]  # fmt: skip
    isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER]

    def ready() -> bool:
        return subprocess.run(isready, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    service = _spawn(
        "postgres",
        argv,
        base,
        port=port,
        url=f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres",
        ready=ready,
        preexec=preexec,
        env=env,
        service_cls=PostgresService,
        bindir=bindir,
        cluster=None if cluster == base else cluster,
    )
    if ids is not None:
        # The log file is created by us (root) before the server starts: keep it readable.
        with contextlib.suppress(OSError):
            os.chmod(service.log_file, 0o644)
    assert isinstance(service, PostgresService)
    return service


# -- Redis --------------------------------------------------------------------------------------


def _redis_binary() -> str:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        apt_install("redis-server")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        raise ServiceError(
            "redis-server is not installed and apt-get install redis-server did not provide it"
        )
    return binary


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(workdir: str | os.PathLike[str], *, port: int | None = None) -> Service:
    """Debian's ``redis-server`` on 127.0.0.1 (no persistence, no protected-mode surprises)."""
    binary = _redis_binary()
    base = Path(workdir)
    port = port or free_port()
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(base), "--daemonize", "no", "--protected-mode", "yes",
    ]  # fmt: skip
    return _spawn(
        "redis", argv, base, port=port, url=f"redis://127.0.0.1:{port}/0", ready=lambda: _redis_ping(port)
    )


# -- S3 (moto) ----------------------------------------------------------------------------------


def start_moto(workdir: str | os.PathLike[str], *, port: int | None = None) -> Service:
    """moto's standalone S3-compatible server on 127.0.0.1 (``pip install 'moto[server]'``)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ServiceError(
            f"moto's server is not installed in {sys.executable}: pip install 'moto[server]' ({exc})"
        ) from None
    base = Path(workdir)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as resp:
                return bool(resp.status < 500)
        except Exception:
            return False

    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "1"}
    return _spawn(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], base,
        port=port, url=url, ready=ready, env=env,
    )  # fmt: skip


__all__ = [
    "PostgresService",
    "Service",
    "ServiceError",
    "apt_install",
    "free_port",
    "start_moto",
    "start_postgres",
    "start_redis",
]
