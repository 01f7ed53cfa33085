"""Run the main example DAG against a sandbox under faults and compare what it left behind.

A run is ``dag.test()`` of ``openbanking_accounts_transactions`` (the helpers of
``tests/dags/test_example_dags_e2e.py`` are reused); its *outcome* is the warehouse table, every
landed file (hidden ones included, so a leftover ``.partial`` counts as a difference), the task
states and tries, and every XCom value. Two outcomes of the same interval must be identical unless
the fault is fatal by design.

``dag.test()`` runs task instances one after the other in the test process. Where the fault needs
real processes -- mapped tasks refreshing a token *at once*, a task *killed* mid-write -- selected
task instances are run in forked children instead (:class:`ForkedTasks`), each with its own
process-wide token cache, exactly as separate workers would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import multiprocessing
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from airflow_provider_openbanking.hooks.openbanking import clear_token_cache
from airflow_provider_openbanking.landing import FORMAT_SUFFIXES, encode_record, file_format_of, iter_records
from airflow_provider_openbanking.sandbox.testing import SandboxServer
from tests.dags.test_example_dags_e2e import DAG_ID, states, succeeded
from tests.fixtures_openbanking import forget_stored_token

UTC = dt.timezone.utc
#: Manual runs at midnight cover the day before: the interval [11-16, 11-17).
LOGICAL = dt.datetime(2026, 11, 17, tzinfo=UTC)
INTERVAL = "interval=20261116T000000Z_20261117T000000Z"
#: The bank clock during every run: just after the interval's end.
CLOCK = LOGICAL + dt.timedelta(minutes=5)
TABLE = "openbanking_transactions"
POOL = "openbanking_api"

__all__ = ["CLOCK", "DAG_ID", "INTERVAL", "LOGICAL", "states", "succeeded"]

#: The consents of the baseline run (one connection per customer).
CONSENTS = {"ob_a": "cust-0001", "ob_b": "cust-0002", "ob_c": "cust-0003"}
SANDBOX_OPTIONS = {"customers": 3, "accounts_per_customer": 3, "transactions_per_account": 120, "seed": 8}


@dataclass
class Outcome:
    """What one run left behind."""

    dagrun: Any
    states: dict[tuple[str, int], str]
    tries: dict[tuple[str, int], int]
    labels: dict[tuple[str, int], str]
    table: list[tuple[Any, ...]]
    files: dict[str, bytes]
    xcoms: list[tuple[str, int, str, Any]] = field(default_factory=list)
    db: Path | None = None

    @property
    def ok(self) -> bool:
        return succeeded(self.dagrun)

    @property
    def problems(self) -> dict[tuple[str, int], str]:
        """The task instances that did not succeed, and what they are: the message of a failed
        run's assertion (the whole state map is too long to show the one that matters)."""
        return {key: value for key, value in self.states.items() if value != "success"}

    @property
    def failed(self) -> bool:
        return str(self.dagrun.state) in ("failed", "DagRunState.FAILED")

    def transactions(self, state: str | None = None) -> dict[str, str]:
        """``{"<conn_id> <account_id>": state}`` per account of the shard ``land_transactions``
        tasks: ``success`` for an account whose file landed, else the state of its shard's task
        (the DAG maps over shards of consents, not over accounts)."""
        out: dict[str, str] = {}
        shard_state = {
            self.labels.get(key, "").split(" shard ")[0]: value
            for key, value in self.states.items()
            if key[0] == "shard.land_transactions"
        }
        for path in self.files:
            fmt = file_format_of(path)
            if not path.startswith("transactions/") or fmt is None:
                continue
            parts = dict(p.split("=", 1) for p in path.split("/") if "=" in p)
            account = parts["account_id"].removesuffix(FORMAT_SUFFIXES[fmt])
            label = f"{unquote(parts['conn_id'])} {unquote(account)}"
            out[label] = "success"
        # A shard task that succeeded names its accounts exactly (a long id is shortened in paths).
        exact: dict[str, str] = {}
        for task_id, _index, key, value in self.xcoms:
            if task_id == "shard.land_transactions" and key == "return_value" and isinstance(value, dict):
                exact.update({f"{value['conn_id']} {a}": "success" for a in value.get("accounts") or {}})
        covered = {label.split(" ", 1)[0] for label in exact}
        out = {k: v for k, v in out.items() if k.split(" ", 1)[0] not in covered} | exact
        for label, value in self.account_states.items():
            out.setdefault(label, value)
        for conn, value in shard_state.items():
            if value != "success" and not any(k.startswith(f"{conn} ") for k in out):
                out[f"{conn} *"] = value
        return {k: v for k, v in out.items() if state is None or v == state}

    @property
    def account_states(self) -> dict[str, str]:
        """``{"<conn_id> <account_id>": "failed"}`` for the accounts a shard task named as failed
        (from the per-account failures in its summary of the consent, when it had one)."""
        out: dict[str, str] = {}
        for task_id, _index, key, value in self.xcoms:
            if task_id == "shard.land_transactions" and key == "return_value" and isinstance(value, dict):
                for account in value.get("skipped") or {}:
                    out[f"{value['conn_id']} {account}"] = "skipped"
        return out

    def _task(self, task_id: str) -> str:
        return {
            "land_transactions": "shard.land_transactions",
            "load_transactions": "shard.load_transactions",
            "consent.land_accounts": "shard.land_accounts",
        }.get(task_id, task_id)

    def state_of(self, task_id: str, label: str | None = None) -> str:
        """The state of ``task_id`` (of the shard of ``label``'s connection); for a mapped task
        without a label, the state all its instances share (``mixed`` otherwise)."""
        task_id = self._task(task_id)
        conn = label.split(" ")[0] if label else None
        found = {
            value
            for key, value in self.states.items()
            if key[0] == task_id and (conn is None or self.labels.get(key, "").split(" shard ")[0] == conn)
        }
        if not found:
            raise KeyError((task_id, label))
        return found.pop() if len(found) == 1 else "mixed"

    def tries_of(self, task_id: str, label: str) -> int:
        """Tries of the shard task that covered ``label`` (``"<conn_id> <account_id>"``)."""
        task_id = self._task(task_id)
        conn = label.split(" ")[0]
        for key, value in self.tries.items():
            if key[0] == task_id and self.labels.get(key, "").split(" shard ")[0] == conn:
                return value
        raise KeyError((task_id, label))


def table_rows(db: Path) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return conn.execute(f"SELECT * FROM {TABLE} ORDER BY 1, 2, 3").fetchall()
        except sqlite3.OperationalError:  # no table: nothing was ever loaded
            return []


def landed_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too), by relative path. A records file (any landing
    format) is given as its records in JSON Lines, read through the landing's reader, so runs
    compare record by record and secrets can be searched for in the text; other files as bytes.
    The batch bookkeeping under ``_manifests/`` is left out."""
    if not root.exists():
        return {}
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or str(p.relative_to(root)).startswith("_manifests/"):
            continue  # the batch bookkeeping (consent markers and shard manifests) names the run
        if file_format_of(p.name) and not p.name.startswith("."):
            out[str(p.relative_to(root))] = b"".join(encode_record(r) + b"\n" for r in iter_records(str(p)))
        else:
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def only(conn_ids: list[str] | set[str], table: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [row for row in table if row[0] in conn_ids]


def only_files(conn_ids: list[str] | set[str], files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if any(f"/conn_id={c}/" in k for c in conn_ids)}


def collect(dagrun: Any, db: Path, landing: Path) -> Outcome:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dagrun.dag_id, TaskInstance.run_id == dagrun.run_id
        )
        task_states, tries, labels = {}, {}, {}
        for ti in tis:
            key = (ti.task_id, ti.map_index)
            task_states[key] = str(getattr(ti.state, "value", ti.state))
            tries[key] = ti.try_number
            if ti.rendered_map_index:
                labels[key] = ti.rendered_map_index
        rows = (
            session.query(XComModel)
            .filter(XComModel.run_id == dagrun.run_id, XComModel.dag_id == dagrun.dag_id)
            .all()
        )
        xcoms = [(r.task_id, r.map_index, r.key, XComModel.deserialize_value(r)) for r in rows]
    return Outcome(dagrun, task_states, tries, labels, table_rows(db), landed_files(landing), xcoms, db)


@dataclass
class Env:
    """Where one test's runs put things."""

    db: Path
    landing: Path


def run_main(dag: Any, env: Env, conn_ids: list[str], logical_date: dt.datetime = LOGICAL) -> Outcome:
    dagrun = dag.test(logical_date=logical_date, run_conf={"conn_ids": list(conn_ids)})
    return collect(dagrun, env.db, env.landing)


def log_text(capfd: Any, caplog: Any) -> str:
    """Everything logged so far: records caught by pytest's handler plus stdout and stderr (task
    logs rendered by structlog, forked children's output)."""
    out, err = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)
    caplog.clear()
    return "\n".join((records, out, err))


def failure_report(outcome: Outcome, log: str, lines: int = 20) -> str:
    """Why a run failed, for an assertion message: the task instances that did not succeed and
    the log's error lines (the states alone do not say what to look at in a CI log)."""
    errors = [
        line[:600]
        for line in log.splitlines()
        if "[error" in line or " ERROR " in line or "Exception:" in line or "Error:" in line
    ]
    return f"{outcome.problems}\n" + "\n".join(errors[-lines:])


@contextlib.contextmanager
def watch(
    condition: Callable[[], bool], action: Callable[[], None], *, every: float = 0.02
) -> Iterator[None]:
    """Run ``action`` once, from a thread, as soon as ``condition()`` holds (during the block)."""
    import threading

    stop = threading.Event()
    fired = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if condition():
                action()
                fired.set()
                return
            stop.wait(every)

    thread = threading.Thread(target=loop, name="fault-watcher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert fired.is_set(), "the watched condition never happened"


# ---- forked processes -----------------------------------------------------------------------

_KEEP: list[Any] = []  # objects a child inherited and must never close (the parent's DB session)


def _debug(text: str) -> None:
    """With ``FAULTS_DEBUG_DIR`` set, children trace their progress there (a hung child is
    otherwise invisible: its output is captured by the stuck parent)."""
    if os.environ.get("FAULTS_DEBUG_DIR"):
        with open(Path(os.environ["FAULTS_DEBUG_DIR"], f"child-{os.getpid()}.txt"), "a") as fh:
            fh.write(f"{time.time():.3f} {text}\n")


def prepare_forked_process() -> None:  # pragma: no cover - runs in children
    """Make a forked child a process of its own, as a separate worker would be.

    A private DB connection pool (the parent's pooled SQLite connections must not be shared),
    its own event loop for the in-process Execution API (a fork copies no thread), an empty
    token cache, and log records written to stderr (pytest's handler lives in the parent).
    """
    from airflow import settings
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
    from airflow.sdk.execution_time import supervisor

    if os.environ.get("FAULTS_DEBUG_DIR"):
        import faulthandler

        _KEEP.append(open(Path(os.environ["FAULTS_DEBUG_DIR"], f"stack-{os.getpid()}.txt"), "w"))  # noqa: SIM115
        faulthandler.dump_traceback_later(30, file=_KEEP[-1])
    _KEEP.append(settings.Session.registry())
    settings.Session.registry.clear()
    settings.engine.dispose(close=False)
    api = InProcessExecutionAPI(supervisor.in_process_api_server().app)
    supervisor.in_process_api_server = lambda: api  # type: ignore[assignment]
    clear_token_cache()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)


def _in_child(work: Callable[[], Any], setup: Callable[[], None] | None) -> None:  # pragma: no cover
    _debug("start")
    try:
        prepare_forked_process()
        if setup is not None:
            setup()
        _debug("ready")
        work()
        _debug("done")
    except BaseException:
        import traceback

        traceback.print_exc()
        _debug(traceback.format_exc())
        raise


def _run_ti(ti_id: str, task: Any) -> None:  # pragma: no cover - runs in children
    import airflow.sdk.definitions.dag as dagmod
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance

    session = settings.Session()
    ti = session.get(TaskInstance, uuid.UUID(ti_id))
    dagmod._ORIGINAL_RUN_TASK(ti=ti, task=task, run_triggerer=True)  # type: ignore[attr-defined]
    session.close()


def _child_main(ti_id: str, task: Any, setup: Callable[[], None] | None) -> None:  # pragma: no cover
    _in_child(functools.partial(_run_ti, ti_id, task), setup)


class ForkedTasks:
    """Run the task instances that ``select(ti)`` picks in forked child processes, concurrently.

    Installed over ``dag.test()``'s task runner: a picked task instance is marked queued (so the
    loop does not pick it again), then started in a child; the loop goes on with the other task
    instances and waits for the children through the metadata database, like a scheduler does.
    ``setup`` runs first in each child (e.g. a barrier); ``supervise(ti, process)`` runs in the
    parent right after the start (e.g. to kill the child).
    """

    def __init__(
        self,
        monkeypatch: Any,
        select: Callable[[Any], bool],
        *,
        setup: Callable[[], None] | None = None,
        supervise: Callable[[Any, Any], None] | None = None,
    ) -> None:
        import airflow.sdk.definitions.dag as dagmod

        self.select = select
        self.setup = setup
        self.supervise = supervise
        self.processes: list[Any] = []
        self.context = multiprocessing.get_context("fork")
        if not hasattr(dagmod, "_ORIGINAL_RUN_TASK"):
            dagmod._ORIGINAL_RUN_TASK = dagmod._run_task  # type: ignore[attr-defined]
        self._original = dagmod._ORIGINAL_RUN_TASK  # type: ignore[attr-defined]
        monkeypatch.setattr(dagmod, "_run_task", self)

    def __call__(self, *, ti: Any, task: Any, run_triggerer: bool = False) -> Any:
        if not self.select(ti):
            return self._original(ti=ti, task=task, run_triggerer=run_triggerer)
        from airflow.utils.state import TaskInstanceState

        ti.set_state(TaskInstanceState.QUEUED)
        process = self.context.Process(target=_child_main, args=(str(ti.id), task, self.setup))
        process.start()
        self.processes.append(process)
        if self.supervise is not None:
            self.supervise(ti, process)
        import threading

        threading.Thread(target=self._reap, args=(str(ti.id), process), daemon=True).start()
        return None

    @staticmethod
    def _reap(ti_id: str, process: Any) -> None:
        """When a child dies without finishing its task instance, do what the scheduler does with
        a task that stopped heartbeating: up for retry if it has retries left, else failed."""
        process.join()
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils import timezone
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

        with create_session(scoped=False) as session:
            ti = session.get(TaskInstance, uuid.UUID(ti_id))
            if ti is None or ti.state not in (TaskInstanceState.QUEUED, TaskInstanceState.RUNNING):
                return
            retry = ti.max_tries > 0 and ti.try_number <= ti.max_tries
            ti.state = TaskInstanceState.UP_FOR_RETRY if retry else TaskInstanceState.FAILED
            ti.end_date = timezone.utcnow()

    @staticmethod
    def context_barrier(parties: int) -> Any:
        """A barrier the forked children can share (created before they fork)."""
        return multiprocessing.get_context("fork").Barrier(parties)

    def join(self, timeout: float = 60) -> list[int | None]:
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
        return [p.exitcode for p in self.processes]


def _dag_test(dag: Any, logical_date: dt.datetime, conn_ids: list[str]) -> None:  # pragma: no cover
    dagrun = dag.test(logical_date=logical_date, run_conf={"conn_ids": list(conn_ids)})
    if not succeeded(dagrun):
        raise SystemExit(3)


def run_concurrently(
    dag: Any,
    env: Env,
    conn_ids: list[str],
    logical_dates: list[dt.datetime],
    *,
    setup: Callable[[], None] | None = None,
    timeout: float = 120,
) -> tuple[list[int | None], list[Outcome]]:
    """``dag.test()`` once per logical date, all at the same moment, each in its own process.

    Returns the processes' exit codes (0: the run succeeded) and the runs' outcomes.
    """
    from airflow.models.dagrun import DagRun

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(logical_dates))

    def ready() -> None:
        if setup is not None:
            setup()
        barrier.wait(30)

    processes = [
        context.Process(target=_in_child, args=(functools.partial(_dag_test, dag, when, conn_ids), ready))
        for when in logical_dates
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(10)
    outcomes = []
    for when in logical_dates:
        runs = DagRun.find(dag_id=dag.dag_id, logical_date=when)
        assert len(runs) == 1, f"no run of {when}"
        outcomes.append(collect(runs[0], env.db, env.landing))
    return [p.exitcode for p in processes], outcomes


def conn_json(
    url: str, refresh_token: str, *, login: str = "demo-client", password: str = "demo-secret", **extra: Any
) -> str:
    extras = {
        "refresh_token": refresh_token,
        "redirect_uri": "http://127.0.0.1:8976/callback",
        "provider_id": "1000",
        "page_size": 5,
        "retry_initial_wait": 0.05,
        "max_elapsed": 30,
        "rotation_wait": 1.0,
        **extra,
    }
    return json.dumps(
        {"conn_type": "openbanking", "host": url, "login": login, "password": password, "extra": extras}
    )


def reset_sandbox(server: SandboxServer) -> None:
    server.reset()
    server.configure(now=CLOCK.isoformat())
    clear_token_cache()


def use_env(setenv: Callable[[str, str], None], root: Path) -> Env:
    env = Env(db=root / "warehouse.db", landing=root / "landing")
    setenv("AIRFLOW_CONN_OPENBANKING_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(env.db)}))
    setenv("AIRFLOW__OPENBANKING__LANDING_DESTINATION", str(env.landing))
    return env


Consents = Callable[..., str]


def make_consents(server: SandboxServer, setenv: Callable[[str, str], None]) -> Consents:
    def make(conn_id: str, customer_id: str | None = None, **extra: Any) -> str:
        """A connection ``conn_id`` holding a fresh consent of ``customer_id`` (default: the
        customer of ``CONSENTS[conn_id]``); ``extra`` overrides connection extras."""
        customer = customer_id or CONSENTS[conn_id]
        token = extra.pop("refresh_token", None) or server.grant_consent(customer)
        setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json(server.url, token, **extra))
        forget_stored_token(conn_id)
        return conn_id

    return make


def env_conn(conn_id: str) -> dict[str, Any]:
    return dict(json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"]))
