"""What ``e2e/run.py`` drives Airflow with: processes in their own groups, the CLI, the REST API,
the list of checks, and a view of the sockets the run's processes listen on."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

BIN = Path(sys.executable).parent
#: Every process the e2e starts carries this variable (value: the run's id), so that the final
#: sweep can find a straggler that escaped its process group, and nothing else.
MARKER = "OPENBANKING_E2E_RUN"

#: The main DAG's lookback (dags/openbanking_accounts_transactions.py).
LOOKBACK = dt.timedelta(days=14)
_T0 = time.monotonic()


class E2EError(RuntimeError):
    pass


class ProcessDied(E2EError):
    """A service exited: waiting longer cannot help."""


class E2EInterrupted(BaseException):
    """The time budget ran out, or SIGTERM/SIGINT/SIGHUP: a BaseException, so that no
    ``except Exception`` swallows it on the way to the ``finally`` that stops every service."""


def say(message: str = "") -> None:
    print(f"[{time.monotonic() - _T0:6.0f}s] {message}" if message else "", flush=True)


def elapsed() -> float:
    return time.monotonic() - _T0


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Call ``check`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except ProcessDied:
            raise
        except (requests.RequestException, E2EError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}{suffix}")
        time.sleep(interval)


class Processes:
    """Services started in their own process groups, stopped group by group (TERM, then KILL)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(
        self, name: str, args: list[str], env: dict[str, str], log: Path, cwd: Path
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=str(cwd),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() takes its children too
            )
        self.procs[name] = proc
        self.logs[name] = log
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                tail = "\n".join(self.logs[name].read_text(errors="replace").splitlines()[-30:])
                raise ProcessDied(f"`airflow {name}` exited with code {code}:\n{tail}")

    @property
    def group_ids(self) -> set[int]:
        return {proc.pid for proc in self.procs.values()}

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop_all(self, grace: float = 30.0) -> None:
        for proc in self.procs.values():
            self._signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            self._signal_group(proc, signal.SIGKILL)  # the group may outlive its leader
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def sweep(self) -> list[str]:
        """Kill any process still carrying this run's marker (escaped its group); list them."""
        import psutil

        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(MARKER) != self.run_id:
                    continue
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
                proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found


def run_pids(run_id: str, groups: Iterable[int]) -> set[int]:
    """This process, every process carrying the run's marker, and every member of ``groups``
    (the services' process groups: PostgreSQL runs as another user with an environment of its own)."""
    import psutil

    groups = set(groups)
    pids = {os.getpid()}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups or proc.environ().get(MARKER) == run_id:
                pids.add(proc.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def listening(pids: set[int]) -> list[dict[str, Any]]:
    """The TCP sockets ``pids`` listen on: ``[{pid, name, address, port}]``."""
    import psutil

    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or conn.pid not in pids or not conn.laddr:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "?"
        out.append({"pid": conn.pid, "name": name, "address": conn.laddr.ip, "port": conn.laddr.port})
    return sorted(out, key=lambda s: (s["port"], s["pid"]))


def run_cli(
    env: dict[str, str], cwd: Path, *args: str, log: Path, timeout: float = 300, quiet: bool = False
) -> None:
    started = time.monotonic()
    with open(log, "wb") as sink:
        try:
            proc = subprocess.run(
                [str(BIN / "airflow"), *args],
                env=env,
                cwd=str(cwd),
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise E2EError(f"`airflow {args[0]} {args[1]}…` did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise E2EError(f"`airflow {' '.join(args[:3])}…` failed (exit {proc.returncode}):\n{tail}")
    if not quiet:
        say(f"  airflow {' '.join(args[:3])} ({time.monotonic() - started:.0f} s)")


def run_clis(env: dict[str, str], cwd: Path, commands: dict[str, list[str]], logs: Path) -> None:
    """Several ``airflow …`` commands at once (each a Python start-up of several seconds); fail
    naming every one that failed. ``commands``: log name -> arguments. Arguments may hold
    secrets: they are never printed."""
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, args in commands.items():
        log = logs / f"{name}.log"
        with open(log, "wb") as sink:
            running[name] = (
                subprocess.Popen(
                    [str(BIN / "airflow"), *args],
                    env=env,
                    cwd=str(cwd),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
    failed = []
    for name, (proc, log) in running.items():
        try:
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = -9
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            failed.append(f"{name} (exit {code}):\n{tail}")
    if failed:
        raise E2EError("airflow CLI failed: " + "\n".join(failed))
    say(f"  {len(commands)} airflow CLI commands ({time.monotonic() - started:.0f} s): {', '.join(commands)}")


class Api:
    """The Airflow REST API (``/api/v2``) as the simple auth manager's ``admin`` user."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.trust_env = False
        self.password = ""

    def login(self, password: str) -> None:
        self.password = password
        resp = self.http.post(
            f"{self.base}/auth/token", json={"username": "admin", "password": password}, timeout=30
        )
        if resp.status_code >= 400:
            raise E2EError(f"login to the API failed: HTTP {resp.status_code} {resp.text[:300]}")
        self.http.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        resp = self.http.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
        if resp.status_code == 401 and self.password:  # the JWT expired: log in again once
            self.login(self.password)
            resp = self.http.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
        if resp.status_code >= 400 and resp.status_code not in ok:
            raise E2EError(f"{method} /api/v2{path} -> HTTP {resp.status_code}: {resp.text[:500]}")
        if resp.status_code >= 400:
            return None
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        resp = self.http.get(f"{self.base}/api/v2/monitor/health", timeout=10)
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})[
            "dag_runs"
        ]
        return runs

    def task_instances(self, dag_id: str, run_id: str = "~", **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.call(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": offset, **params},
            )
            out.extend(page["task_instances"])
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                return out

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
        """A task instance's log as the UI gets it (from the remote log store once uploaded)."""
        page = self.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content = (page or {}).get("content") or []
        lines = []
        for item in content if isinstance(content, list) else [content]:
            if isinstance(item, dict):
                sources = item.get("sources")
                lines.append(" ".join(str(x) for x in ([item.get("event", "")] + (sources or [])) if x))
            else:
                lines.append(str(item))
        return "\n".join(lines)


def component_states(health: dict[str, Any]) -> dict[str, str]:
    return {
        name: str((health.get(name) or {}).get("status"))
        for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
    }


class Checks:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.results.append({"check": name, "ok": bool(ok), "detail": detail})
        say(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r["ok"] for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [r["check"] for r in self.results if not r["ok"]]


def iso(value: str | None) -> dt.datetime:
    assert value, "missing datetime"
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_windows(
    runs: list[dict[str, Any]], default_conn_ids: list[str], lookback: dt.timedelta = LOOKBACK
) -> dict[str, list[tuple[dt.date, dt.date]]]:
    """Per connection, the date windows (inclusive) its transactions were queried for."""
    windows: dict[str, list[tuple[dt.date, dt.date]]] = {}
    for run in runs:
        start, end = iso(run["data_interval_start"]), iso(run["data_interval_end"])
        window = ((start - lookback).date(), (end - dt.timedelta(days=1)).date())
        for conn_id in (run.get("conf") or {}).get("conn_ids") or default_conn_ids:
            windows.setdefault(conn_id, []).append(window)
    return windows


def sql_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())
