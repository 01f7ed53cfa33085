"""``make e2e``: the provider under Airflow's real services, checked end to end.

``airflow dags test`` runs tasks one at a time in one process. This script runs the example DAG
the way a deployment does and checks the outcome:

1. a throw-away ``AIRFLOW_HOME`` in ``.e2e-home/`` (SQLite, ``LocalExecutor`` with parallelism 4,
   free ports picked for the API server and both log servers) and the sandbox bank with rotating
   refresh tokens and short-lived access tokens;
2. ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` as separate processes
   (each in its own process group), waited for through ``/api/v2/monitor/health``;
3. through the REST API: ``openbanking`` connections (customer consents), the SQLite warehouse
   connection, the pool ``openbanking_api``, the Variable ``openbanking_conn_ids`` (two
   consents); then the main DAG is unpaused (the scheduler adds the latest interval's run) and
   triggered for two dates, the second run with a third consent in its ``conn_ids`` param;
4. that third consent's bank gateway (a second sandbox) answers 503 on its token endpoint when
   the runs start, so its consent sensor's own check fails and, ``[operators]
   default_deferrable`` being on, it defers to the triggerer; the gateway comes back once the
   scheduler has registered the deferral, and the trigger's check then succeeds;
5. checks: every run and every task instance succeeded, the warehouse table equals the banks'
   truth for the windows the runs covered, the sensor went through ``deferred`` and its trigger
   ran and fired in the triggerer, and the sandboxes answered no ``invalid_grant``;
6. headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright) logs into the UI and
   screenshots the ``openbanking`` connection form and the successful DAG run.

Output goes to ``e2e-artifacts/`` (git-ignored): ``summary.json``, screenshots, the services' logs
and the task logs. Every process started here is stopped at the end, also on failure or on the
overall ``--timeout``; the exit status is 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOME = REPO / ".e2e-home"
ARTIFACTS = REPO / "e2e-artifacts"
BIN = Path(sys.executable).parent
MAIN_DAG = "openbanking_accounts_transactions"
POOL = "openbanking_api"
POOL_SLOTS = 4
PARALLELISM = 4
LOOKBACK = dt.timedelta(days=14)  # the main DAG's lookback (dags/openbanking_accounts_transactions.py)
UTC = dt.timezone.utc
#: The consents every run covers (the Variable ``openbanking_conn_ids``): connection -> customer.
CONSENTS = {"openbanking_default": "cust-0001", "openbanking_customer_2": "cust-0002"}
#: A third consent, added to the second triggered run only (its ``conn_ids`` param), whose bank
#: gateway (a second sandbox) is down when the run starts: its sensor is the one that defers.
LATE_CONSENT = ("openbanking_customer_3", "cust-0003")
WAREHOUSE_CONN = "openbanking_warehouse"
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Every process this script starts carries this variable (value: this run's id), so that the
#: final sweep can find a straggler that escaped its process group, and nothing else.
MARKER = "OPENBANKING_E2E_RUN"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TERMINAL = {"success", "failed"}


class E2EError(RuntimeError):
    pass


class E2ETimeout(BaseException):
    """The overall time budget ran out (a BaseException, so no ``except Exception`` swallows it)."""


_T0 = time.monotonic()


def say(message: str = "") -> None:
    print(f"[{time.monotonic() - _T0:6.0f}s] {message}" if message else "", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Call ``check`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, E2EError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}{suffix}")
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------------


class Processes:
    """Services started in their own process groups, stopped group by group (TERM, then KILL)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=str(HOME),
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
                raise E2EError(f"`airflow {name}` exited with code {code}:\n{tail}")

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
        self.procs.clear()

    def sweep(self) -> list[str]:
        """Kill any process still carrying this run's marker (escaped its group); list them."""
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil is a dev dependency
            return []
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


# -- Airflow ----------------------------------------------------------------------------------------


def airflow_env(run_id: str, ports: dict[str, int]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__"))
        and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
    }
    api = f"http://127.0.0.1:{ports['api']}"
    from cryptography.fernet import Fernet

    env.update(
        {
            MARKER: run_id,
            "AIRFLOW_HOME": str(HOME),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports["api"]),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__WORKERS": "1",
            # Where workers reach the Execution API (Airflow 3.3 reads it from [core]; [workers]
            # is its deprecated spelling there). Without it they call port 8080 and fail.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Consent sensors wait in the triggerer (the sensor's `deferrable` default).
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        }
    )
    return env


LOCAL_SETTINGS = '''"""Cluster policy of the e2e deployment (written by e2e/run.py).

The example DAG has ``catchup=True`` from 2026-11-01: unpaused as it is, the scheduler would first
backfill every day since then. The e2e deployment turns catchup off, so unpausing schedules only
the latest interval, next to the two runs the e2e triggers.
"""


def dag_policy(dag):
    if dag.dag_id.startswith("openbanking_"):
        dag.catchup = False
'''


def run_cli(env: dict[str, str], *args: str, log: Path, timeout: float = 300) -> None:
    started = time.monotonic()
    with open(log, "wb") as sink:
        try:
            proc = subprocess.run(
                [str(BIN / "airflow"), *args],
                env=env,
                cwd=str(HOME),
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise E2EError(f"`airflow {' '.join(args)}` did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise E2EError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    say(f"  airflow {' '.join(args)} ({time.monotonic() - started:.0f} s)")


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


def component_states(health: dict[str, Any]) -> dict[str, str]:
    return {
        name: str((health.get(name) or {}).get("status"))
        for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
    }


# -- checks -----------------------------------------------------------------------------------------


class Checks:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.results.append({"check": name, "ok": bool(ok), "detail": detail})
        say(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r["ok"] for r in self.results)


def iso(value: str | None) -> dt.datetime:
    assert value, "missing datetime"
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_windows(
    runs: list[dict[str, Any]], default_conn_ids: list[str]
) -> dict[str, list[tuple[dt.date, dt.date]]]:
    """Per connection, the date windows (inclusive) its transactions were queried for."""
    windows: dict[str, list[tuple[dt.date, dt.date]]] = {}
    for run in runs:
        start, end = iso(run["data_interval_start"]), iso(run["data_interval_end"])
        window = ((start - LOOKBACK).date(), (end - dt.timedelta(days=1)).date())
        for conn_id in (run.get("conf") or {}).get("conn_ids") or default_conn_ids:
            windows.setdefault(conn_id, []).append(window)
    return windows


def check_warehouse(
    checks: Checks,
    db: Path,
    windows: dict[str, list[tuple[dt.date, dt.date]]],
    banks: dict[str, Any],
    accounts: dict[str, list[str]],
) -> None:
    """The table must hold exactly the bank's transactions of the windows the runs covered."""
    name = "warehouse equals the bank's truth"
    if not db.exists():
        checks.add(name, False, f"{db} does not exist")
        return
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT conn_id, account_id, transaction_id, status, amount FROM openbanking_transactions"
        ).fetchall()
    table: dict[tuple[str, str], dict[str, tuple[str, float]]] = {}
    duplicates = 0
    for conn_id, account_id, txn_id, status, amount in rows:
        bucket = table.setdefault((conn_id, account_id), {})
        duplicates += txn_id in bucket
        bucket[txn_id] = (status, float(amount))
    problems: list[str] = []
    expected_total = pending = 0
    for conn_id, account_ids in accounts.items():
        for account_id in account_ids:
            truth: dict[str, dict[str, Any]] = {}
            for start, end in windows.get(conn_id, []):
                for t in banks[conn_id].truth_transactions(account_id, start, end):
                    truth[t["transactionId"]] = t
            got = table.pop((conn_id, account_id), {})
            expected_total += len(truth)
            pending += sum(1 for t in truth.values() if t["status"] == "PENDING")
            missing, extra = set(truth) - set(got), set(got) - set(truth)
            if missing or extra:
                problems.append(f"{conn_id}/{account_id}: {len(missing)} missing, {len(extra)} extra")
            for txn_id in set(truth) & set(got):
                status, amount = got[txn_id]
                if status != truth[txn_id]["status"] or abs(amount - float(truth[txn_id]["amount"])) > 1e-9:
                    problems.append(f"{conn_id}/{account_id}/{txn_id}: {got[txn_id]} != bank")
    if table:
        problems.append(f"rows of unexpected accounts: {sorted(table)[:5]}")
    if duplicates:
        problems.append(f"{duplicates} duplicate transaction ids")
    if expected_total == 0:
        problems.append("the bank has no transactions in these windows: nothing was compared")
    spans = {
        conn_id: f"{min(w[0] for w in ws)}..{max(w[1] for w in ws)}" for conn_id, ws in windows.items() if ws
    }
    checks.add(
        name,
        not problems,
        f"{len(rows)} rows = the bank's {expected_total} transactions ({pending} pending) of "
        f"{sum(map(len, accounts.values()))} accounts; windows {spans}"
        + (f"; {problems[:5]}" if problems else ""),
    )


def defer_exit_processed(log: Path, deferred: dict[str, Any]) -> bool:
    """Has the scheduler processed the executor's event of the worker that deferred this TI?

    Until it has, a trigger that fires at once makes Airflow 3.3.2 fail the task ("finished with
    state success, but the task instance's state attribute is queued", apache/airflow#67287).
    """
    if not log.exists():
        return False
    needle = (
        f"task_id={deferred['task_id']}, run_id={deferred['dag_run_id']}, map_index={deferred['map_index']},"
    )
    return any(
        "TaskInstance Finished:" in line and needle in line and "state=deferred" in line
        for line in log.read_text(errors="replace").splitlines()
    )


# -- browser ------------------------------------------------------------------------------------------

#: What the ``openbanking`` connection form must show (labels from get_provider_info's form).
STANDARD_LABELS = ("API base URL", "Client ID", "Client secret")
EXTRA_LABELS = ("Refresh token", "Provider ID", "Scopes", "Redirect URI")


def screenshots(
    base: str,
    password: str,
    run_id: str | None,
    deferred: dict[str, Any],
    out: Path,
    timeout_ms: int = 90_000,
) -> dict[str, Any]:
    """Log into the UI with headless Chromium; screenshot the connection form and the DAG run.

    Returns ``{"shots": [file names], "form": {what the form showed}}``.
    """
    from playwright.sync_api import sync_playwright

    shots: list[str] = []
    form: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1500})
            page.set_default_timeout(timeout_ms)
            page.goto(f"{base}/", wait_until="domcontentloaded")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)

            # The form of connection `openbanking_default`: its accordion opens one section at a
            # time, so the standard and the extra fields are shot one after the other, then side by side.
            page.goto(f"{base}/connections", wait_until="domcontentloaded")
            row = page.get_by_role("row").filter(has_text="openbanking_default")
            row.get_by_role("button", name="Edit Connection").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Open Banking (Flinks / FDX)").first.wait_for()
            form["standard"] = _visible_labels(dialog, STANDARD_LABELS)
            form["client_secret_type"] = dialog.locator("input[name='password']").get_attribute("type")
            standard = out / "connection-form-standard.png"
            dialog.screenshot(path=str(standard))
            dialog.get_by_role("button", name="Extra Fields", exact=True).click()
            dialog.locator("#element_refresh_token").wait_for()
            time.sleep(1)  # the accordion's animation
            form["extra"] = _visible_labels(dialog, EXTRA_LABELS)
            form["refresh_token_type"] = dialog.locator("#element_refresh_token").get_attribute("type")
            form["extra_inputs"] = sorted(
                str(el.get_attribute("id"))[len("element_") :]
                for el in dialog.locator("[id^='element_']").all()
                if el.is_visible()
            )
            extra = out / "connection-form-extra.png"
            dialog.screenshot(path=str(extra))
            combined = out / "connection-form.png"
            _side_by_side(browser, [standard, extra], combined)
            shots += [combined.name, standard.name, extra.name]
            page.keyboard.press("Escape")

            if run_id:
                page.goto(f"{base}/dags/{MAIN_DAG}/runs/{run_id}", wait_until="domcontentloaded")
                page.get_by_text("Task Instances", exact=False).first.wait_for()
                page.get_by_role("button", name="Show Grid (Press g)").click()
                page.get_by_text("Success", exact=True).first.wait_for()
                time.sleep(3)  # let the grid finish rendering
                grid = out / "dag-run.png"
                page.screenshot(path=str(grid))
                page.get_by_role("button", name="Show Graph (Press g)").click()
                time.sleep(4)
                graph = out / "dag-run-graph.png"
                page.screenshot(path=str(graph))
                page.get_by_role("button", name="Show Grid (Press g)").click()
                shots += [grid.name, graph.name]

            if deferred:  # the sensor that waited in the triggerer: its log
                page.goto(
                    f"{base}/dags/{MAIN_DAG}/runs/{deferred['dag_run_id']}/tasks/{deferred['task_id']}"
                    f"/mapped/{deferred['map_index']}",
                    wait_until="domcontentloaded",
                )
                page.get_by_text("deferring to the triggerer", exact=False).first.wait_for()
                time.sleep(2)
                sensor = out / "deferred-sensor-log.png"
                page.screenshot(path=str(sensor))
                shots.append(sensor.name)
        finally:
            browser.close()
    return {"shots": shots, "form": form}


def _visible_labels(dialog: Any, labels: tuple[str, ...]) -> dict[str, bool]:
    return {label: dialog.get_by_text(label, exact=True).first.is_visible() for label in labels}


def _side_by_side(browser: Any, images: list[Path], out: Path) -> None:
    """One PNG of ``images`` next to each other (rendered by the browser: no imaging library)."""
    tags = "".join(
        f'<img style="margin:10px;vertical-align:top;border:1px solid #ccc" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in images
    )
    page = browser.new_page(viewport={"width": 1900, "height": 800})
    try:
        page.set_content(
            f'<html><body style="margin:0;white-space:nowrap;background:#fff">{tags}</body></html>'
        )
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        page.screenshot(path=str(out), full_page=True)
    finally:
        page.close()


def check_form(checks: Checks, form: dict[str, Any]) -> None:
    labels = {**form.get("standard", {}), **form.get("extra", {})}
    missing = [label for label in (*STANDARD_LABELS, *EXTRA_LABELS) if not labels.get(label)]
    secret = form.get("refresh_token_type") == "password" and form.get("client_secret_type") == "password"
    checks.add(
        "UI shows the openbanking connection form",
        not missing and secret,
        f"fields {', '.join(k for k, v in labels.items() if v)}; refresh token input type="
        f"{form.get('refresh_token_type')}, client secret input type={form.get('client_secret_type')}; "
        f"extra inputs rendered: {form.get('extra_inputs')}" + (f"; MISSING {missing}" if missing else ""),
    )


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=2400, help="overall time budget, seconds")
    p.add_argument("--runs-timeout", type=float, default=1500, help="bound on waiting for the DAG runs")
    p.add_argument(
        "--dates",
        default="2026-11-19,2026-11-20",
        help="logical dates of the two triggered runs (each covers the day before)",
    )
    p.add_argument("--accounts-per-customer", type=int, default=3)
    p.add_argument("--transactions-per-account", type=int, default=1000)
    p.add_argument("--access-token-ttl", type=int, default=30, help="sandbox access-token lifetime (s)")
    p.add_argument(
        "--outage-timeout",
        type=float,
        default=600,
        help="end the token-endpoint outage after this long even if no sensor deferred (a failure)",
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=900,
        help="wait this long for another make e2e in the same checkout to finish",
    )
    p.add_argument("--no-browser", action="store_true", help="skip the UI screenshots")
    p.add_argument(
        "--hold",
        type=float,
        default=0,
        help="keep everything running this many seconds after the checks (to look at the UI)",
    )
    return p.parse_args(argv)


def take_lock(timeout: float) -> int:
    """One ``make e2e`` at a time per checkout (they share .e2e-home/ and e2e-artifacts/): an
    exclusive flock on the e2e/ directory, waited for at most ``timeout`` seconds."""
    fd = os.open(Path(__file__).resolve().parent, os.O_RDONLY)
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise SystemExit(
                    f"another `make e2e` in this checkout is still running after {timeout:.0f} s"
                ) from None
            if not waiting:
                say("  another `make e2e` runs in this checkout: waiting for it")
                waiting = True
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dates = [dt.datetime.combine(dt.date.fromisoformat(d), dt.time(), UTC) for d in args.dates.split(",")]
    run_id = f"{os.getpid()}-{secrets.token_hex(4)}"
    os.environ[MARKER] = run_id  # inherited by the sandbox and every service
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

    def on_alarm(signum: int, frame: Any) -> None:
        raise E2ETimeout(f"overall timeout of {args.timeout:.0f} s")

    def on_term(signum: int, frame: Any) -> None:
        raise E2ETimeout("terminated (SIGTERM)")

    say(f"Open Banking provider under Airflow's real services (run {run_id})")
    lock = take_lock(args.lock_timeout)  # noqa: F841 - held (open) until the process exits
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(args.timeout))
    for path in (HOME, ARTIFACTS):
        if path.exists():
            shutil.rmtree(path)
    (HOME / "config").mkdir(parents=True)
    (HOME / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    logs = ARTIFACTS / "logs"
    logs.mkdir(parents=True)
    say(f"  AIRFLOW_HOME={HOME.relative_to(REPO)}  artifacts={ARTIFACTS.relative_to(REPO)}")

    from airflow_provider_openbanking.sandbox.testing import SandboxServer

    ports = {"api": free_port(), "worker_logs": free_port(), "trigger_logs": free_port()}
    env = airflow_env(run_id, ports)
    base = f"http://127.0.0.1:{ports['api']}"
    bank_now = dates[-1] + dt.timedelta(minutes=5)
    bank_options: dict[str, Any] = {
        "accounts_per_customer": args.accounts_per_customer,
        "transactions_per_account": args.transactions_per_account,
        "seed": 42,
        "rotate_refresh_tokens": True,
        "access_token_ttl": args.access_token_ttl,
        "now": bank_now.isoformat(),
    }
    bank = SandboxServer(customers=len(CONSENTS), **bank_options)
    # The late consent's bank gateway: a second sandbox (same seed, so the same data), whose
    # token endpoint is down when the runs start.
    gateway = SandboxServer(customers=3, **bank_options)
    late_conn, late_customer = LATE_CONSENT
    banks = {**{c: bank for c in CONSENTS}, late_conn: gateway}
    customers = {**CONSENTS, late_conn: late_customer}
    procs = Processes(run_id)
    checks = Checks()
    summary: dict[str, Any] = {"run": run_id, "ports": ports, "checks": checks.results, "timings": {}}
    timings: dict[str, float] = summary["timings"]
    api = Api(base)
    status = 1
    phase_started = time.monotonic()

    def phase(name: str) -> None:
        nonlocal phase_started
        now = time.monotonic()
        timings[name] = round(now - phase_started, 1)
        phase_started = now

    try:
        bank.start()
        gateway.start()
        say(
            f"  sandbox {bank.url} (+ {gateway.url} for {late_conn}): rotating refresh tokens, "
            f"{args.access_token_ttl} s access tokens, bank clock {bank_now:%Y-%m-%d %H:%M}Z"
        )
        run_cli(env, "db", "migrate", log=logs / "db-migrate.log")
        phase("setup")

        say(f"Starting {', '.join(SERVICES)} (API on {base}, LocalExecutor, parallelism {PARALLELISM})")
        for name in SERVICES:
            procs.start(name, [str(BIN / "airflow"), name], env, logs / f"{name}.log")

        def healthy() -> bool:
            procs.check_alive()
            states = component_states(api.health())
            return all(s == "healthy" for s in states.values())

        wait_for("the services to report healthy", healthy, timeout=300)
        password_file = HOME / "simple_auth_manager_passwords.json.generated"
        wait_for("the admin password file", password_file.exists, timeout=60, interval=1)
        password = json.loads(password_file.read_text())["admin"]
        api.login(password)
        say(f"  healthy: {component_states(api.health())}")
        phase("services_up")

        say("Connections, pool and Variable through the REST API")
        accounts = {
            conn_id: [a["accountId"] for a in banks[conn_id].truth_accounts(customer)]
            for conn_id, customer in customers.items()
        }
        for conn_id, customer in customers.items():
            api.call(
                "POST",
                "/connections",
                json={
                    "connection_id": conn_id,
                    "conn_type": "openbanking",
                    "description": f"Sandbox consent of {customer}",
                    "host": banks[conn_id].url,
                    "login": "demo-client",
                    "password": "demo-secret",
                    "extra": json.dumps(
                        {
                            "refresh_token": banks[conn_id].grant_consent(customer),
                            "provider_id": "1000",
                            "scopes": "ACCOUNT_BASIC ACCOUNT_DETAILED TRANSACTIONS",
                            "redirect_uri": "http://127.0.0.1:8976/callback",
                        }
                    ),
                },
            )
        api.call(
            "POST",
            "/connections",
            json={
                "connection_id": WAREHOUSE_CONN,
                "conn_type": "sqlite",
                "description": "e2e warehouse (SQLite)",
                "host": str(HOME / "warehouse.db"),
            },
        )
        api.call(
            "POST",
            "/pools",
            json={
                "name": POOL,
                "slots": POOL_SLOTS,
                "description": "Open Banking API calls",
                "include_deferred": False,
            },
        )
        api.call(
            "POST", "/variables", json={"key": "openbanking_conn_ids", "value": json.dumps(list(CONSENTS))}
        )

        def dag_parsed() -> bool:
            procs.check_alive()
            errors = api.call("GET", "/importErrors")
            if errors and errors.get("total_entries"):
                raise E2EError(f"DAG import errors: {json.dumps(errors)[:2000]}")
            return api.call("GET", f"/dags/{MAIN_DAG}", ok=(404,)) is not None

        wait_for(f"{MAIN_DAG} to be parsed", dag_parsed, timeout=300)
        phase("configured")

        # The late consent's token endpoint is down when the runs start: its sensor's own check
        # fails, so it defers (`[operators] default_deferrable`) and waits in the triggerer.
        gateway.inject({"kind": "status", "status": 503, "path": "/api/v1/token", "count": 1_000_000})
        api.call("PATCH", f"/dags/{MAIN_DAG}", json={"is_paused": False})
        triggered = []
        for i, logical in enumerate(dates):
            body: dict[str, Any] = {
                "dag_run_id": f"e2e__{logical:%Y-%m-%d}",
                "logical_date": logical.isoformat(),
                "note": "triggered by make e2e",
            }
            if i == len(dates) - 1:
                body["conf"] = {"conn_ids": [*CONSENTS, late_conn]}
            triggered.append(api.call("POST", f"/dags/{MAIN_DAG}/dagRuns", json=body)["dag_run_id"])
        say(
            f"Unpaused {MAIN_DAG}; triggered {', '.join(triggered)} "
            f"(the last one with {late_conn}, whose token endpoint is down)"
        )

        deferred: dict[str, Any] = {}
        outage_started = time.monotonic()
        outage_over = False
        deferred_seen = 0.0
        runs_deadline = time.monotonic() + args.runs_timeout
        last_report = ""
        runs: list[dict[str, Any]] = []
        while True:
            procs.check_alive()
            runs = api.dag_runs(MAIN_DAG)
            if not outage_over:
                if not deferred:
                    for ti in api.task_instances(MAIN_DAG, state="deferred"):
                        deferred = {
                            k: ti.get(k) for k in ("dag_run_id", "task_id", "map_index", "try_number")
                        }
                        deferred_seen = time.monotonic()
                        say(f"  deferred: {deferred}")
                        break
                # End the outage once the scheduler has taken note of the deferral (see
                # defer_exit_processed); the trigger's check, still retrying, then succeeds.
                if (
                    deferred
                    and (
                        defer_exit_processed(logs / "scheduler.log", deferred)
                        or time.monotonic() - deferred_seen > 120
                    )
                ) or time.monotonic() - outage_started > args.outage_timeout:
                    gateway.clear_faults()
                    outage_over = True
                    say(
                        f"  {late_conn}'s token endpoint back up after {time.monotonic() - outage_started:.0f} s"
                        + ("" if deferred else "; NO sensor deferred")
                    )
            report = ", ".join(f"{r['dag_run_id']}={r['state']}" for r in runs)
            if report != last_report:
                say(f"  runs: {report}")
                last_report = report
            ids = {r["dag_run_id"] for r in runs}
            if set(triggered) <= ids and all(r["state"] in TERMINAL for r in runs) and outage_over:
                break
            if time.monotonic() > runs_deadline:
                raise E2EError(f"runs not finished after {args.runs_timeout:.0f} s: {report}")
            time.sleep(3)
        phase("runs")

        say("Checks")
        tis_by_run = {r["dag_run_id"]: api.task_instances(MAIN_DAG, r["dag_run_id"]) for r in runs}
        summary["runs"] = [
            {
                k: r.get(k)
                for k in (
                    "dag_run_id",
                    "run_type",
                    "state",
                    "data_interval_start",
                    "data_interval_end",
                    "conf",
                )
            }
            for r in runs
        ]
        not_ok = {
            rid: sorted(
                f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in tis if t["state"] != "success"
            )
            for rid, tis in tis_by_run.items()
        }
        checks.add(
            "every run and task instance succeeded",
            set(triggered) <= set(tis_by_run)
            and all(r["state"] == "success" for r in runs)
            and not any(not_ok.values()),
            f"{len(runs)} runs ({', '.join(sorted(r['run_type'] for r in runs))}), "
            f"{sum(map(len, tis_by_run.values()))} task instances"
            + (
                f"; not successful: { {k: v for k, v in not_ok.items() if v} }"
                if any(not_ok.values())
                else ""
            ),
        )
        windows = run_windows(runs, list(CONSENTS))
        check_warehouse(checks, HOME / "warehouse.db", windows, banks, accounts)
        check_triggerer(checks, deferred, tis_by_run)
        counters = {"bank": bank.counters(), "gateway": gateway.counters()}
        summary["sandbox_counters"] = counters
        invalid = {k: c.get("invalid_grant") for k, c in counters.items()}
        refreshes = {k: c.get("token_grants", {}).get("refresh_token", 0) for k, c in counters.items()}
        checks.add(
            "sandbox answered no invalid_grant",
            all(v == 0 for v in invalid.values()) and all(v > 0 for v in refreshes.values()),
            f"invalid_grant {invalid}, refresh grants (each rotating the refresh token) {refreshes}, "
            f"503s of the outage {counters['gateway'].get('status', {}).get('503', 0)}, API requests "
            f"{ {k: sum(c.get('requests', {}).values()) for k, c in counters.items()} }",
        )
        stored = api.call("GET", "/variables", params={"limit": 100})
        keys = sorted(v["key"] for v in stored.get("variables", []))
        checks.add(
            "rotated refresh tokens are kept in the token-store Variables",
            all(f"openbanking_token__{c}" in keys for c in customers),
            f"Variables: {keys}",
        )
        phase("checks")

        if not args.no_browser:
            say("Headless Chromium: connection form and DAG run screenshots")
            good = [r["dag_run_id"] for r in runs if r["dag_run_id"] in triggered and r["state"] == "success"]
            try:
                ui = screenshots(base, password, (good or triggered)[-1], deferred, ARTIFACTS)
                summary["ui"] = ui
                check_form(checks, ui["form"])
                checks.add(
                    "UI screenshots taken",
                    {"connection-form.png", "dag-run.png"} <= set(ui["shots"]),
                    ", ".join(f"{ARTIFACTS.name}/{s}" for s in ui["shots"]),
                )
            except Exception as exc:  # a browser problem is a failed check, not a crash
                with contextlib.suppress(Exception):
                    (ARTIFACTS / "browser-error.txt").write_text(traceback.format_exc())
                checks.add("UI screenshots taken", False, f"{type(exc).__name__}: {str(exc)[:500]}")
            phase("browser")

        if args.hold:
            say(f"Holding for {args.hold:.0f} s: UI {base} (admin; password in {password_file})")
            time.sleep(args.hold)
        status = 0 if checks.ok else 1
    except (E2EError, E2ETimeout) as exc:
        say(f"E2E FAILED: {exc}")
        summary["error"] = str(exc)
    except Exception:
        say(f"E2E FAILED with an unexpected error:\n{traceback.format_exc()}")
        summary["error"] = traceback.format_exc()
    finally:
        signal.alarm(0)
        say("Stopping every service started here")
        procs.stop_all()
        bank.stop()
        gateway.stop()
        leftovers = procs.sweep()
        if leftovers:
            say(f"  killed {len(leftovers)} leftover process(es): {leftovers}")
        summary["leftover_processes"] = leftovers
        with contextlib.suppress(Exception):
            if (HOME / "logs").exists():
                shutil.copytree(HOME / "logs", ARTIFACTS / "task-logs", dirs_exist_ok=True)
        summary["seconds"] = round(time.monotonic() - _T0, 1)
        summary["ok"] = status == 0
        (ARTIFACTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    say(f"E2E {'PASSED' if status == 0 else 'FAILED'} in {time.monotonic() - _T0:.0f} s ({timings})")
    return status


def check_triggerer(
    checks: Checks, deferred: dict[str, Any], tis_by_run: dict[str, list[dict[str, Any]]]
) -> None:
    """A consent sensor went through ``deferred``, its trigger ran in the triggerer and fired
    success, and the sensor then finished on a worker."""
    name = "the deferrable token sensor ran in the triggerer"
    if not deferred:
        checks.add(name, False, "no sensor was seen deferred")
        return
    ti = next(
        (
            t
            for t in tis_by_run.get(deferred["dag_run_id"], [])
            if t["task_id"] == deferred["task_id"] and t["map_index"] == deferred["map_index"]
        ),
        None,
    )
    # The triggerer writes what a trigger logs next to the task's log: attempt=N.log.trigger.<id>.log
    ti_dir = (
        HOME
        / "logs"
        / f"dag_id={MAIN_DAG}"
        / f"run_id={deferred['dag_run_id']}"
        / f"task_id={deferred['task_id']}"
        / f"map_index={deferred['map_index']}"
    )
    trigger_logs = sorted(ti_dir.glob("attempt=*.log.trigger.*.log")) if ti_dir.exists() else []
    events = []
    for path in trigger_logs:
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "Trigger fired event":
                    events.append(str(record.get("result")))
    task_log = "".join(
        p.read_text(errors="replace") for p in sorted(ti_dir.glob("attempt=*.log")) if ti_dir.exists()
    )
    deferred_in_task_log = "deferring to the triggerer" in task_log
    fired_success = any("'status': 'success'" in e for e in events)
    checks.add(
        name,
        ti is not None and ti["state"] == "success" and fired_success and deferred_in_task_log,
        f"{deferred['task_id']}[{deferred['map_index']}] of {deferred['dag_run_id']} was seen deferred "
        f"(task log says so: {deferred_in_task_log}), its trigger log "
        f"{[p.name for p in trigger_logs]} shows {events[:1] or 'no event'}, then the task "
        f"{ti['state'] if ti else 'is missing'}",
    )


if __name__ == "__main__":
    sys.exit(main())
