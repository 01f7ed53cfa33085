"""The provider keeps no state on a worker's local disk between tasks.

On Celery or Kubernetes the next task (or the retry, or the trigger) runs on another machine: a
refresh token, a cursor or a half-written file left on the local disk would be lost there, or
worse, be stale on the next run that lands on this machine. Everything that must outlive a task
goes to Airflow (the token store's Variable, XCom) or to the configured destination.

Two checks:

- statically, no provider module that runs in a task imports a module made to keep things on
  disk (``tempfile``, ``shelve``, ``pickle``, ``sqlite3``, ``dbm``, …);
- dynamically, the main example DAG runs end to end (``dag.test``) in a child process watched by a
  Python audit hook, with rotating refresh tokens, short access tokens, a token-endpoint outage
  that fails the first try of the first shard task (so its retry runs too, reading the first
  try's resume markers), and the landing destination in memory (``memory://``). Every file the provider's code opens for writing, creates, renames or
  connects to as SQLite is recorded (the call stack decides whose code it is); apart from the
  warehouse database the DAG is pointed at and Airflow's own metadata database and task logs,
  there must be none.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PROVIDER = REPO / "airflow_provider_openbanking"
#: Not task code: the fake bank, and the CLI an admin runs on their own machine.
NOT_TASK_CODE = ("sandbox/", "cli.py", "__main__.py")
#: Modules whose purpose is keeping things on a local disk.
DISK_STATE_MODULES = {
    "tempfile",
    "shelve",
    "dbm",
    "pickle",
    "sqlite3",
    "diskcache",
    "joblib",
    "platformdirs",
    "appdirs",
    "filelock",
}
MAIN_DAG = "openbanking_accounts_transactions"


def task_modules() -> list[Path]:
    return sorted(
        p
        for p in PROVIDER.rglob("*.py")
        if not any(str(p.relative_to(PROVIDER)).startswith(prefix) for prefix in NOT_TASK_CODE)
    )


def test_task_code_imports_no_disk_state_module() -> None:
    offenders = []
    for path in task_modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in DISK_STATE_MODULES:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not offenders, offenders


@pytest.mark.slow
def test_main_dag_writes_nothing_to_local_disk(sandbox: Any, tmp_path: Path) -> None:
    sandbox.configure(rotate_refresh_tokens=True, access_token_ttl=30, now="2026-11-19T00:05:00Z")
    # The first two token requests fail (503): with max_attempts=2 the accounts step's consent
    # outlasts its retry budget, the task fails its first try and is retried (a second later).
    sandbox.inject({"kind": "status", "status": 503, "path": "/api/v1/token", "count": 2})
    conn = {
        "conn_type": "openbanking",
        "host": sandbox.url,
        "login": "demo-client",
        "password": "demo-secret",
        "extra": {
            "refresh_token": sandbox.grant_consent("cust-0001"),
            "provider_id": "1000",
            "max_attempts": 2,
            "retry_initial_wait": 0.05,
            "rotation_wait": 1.0,
        },
    }
    warehouse = tmp_path / "warehouse.db"
    report = tmp_path / "report.json"
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_CONN_OPENBANKING_NO_DISK": json.dumps(conn),
            "AIRFLOW_CONN_OPENBANKING_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
            "AIRFLOW__OPENBANKING__LANDING_DESTINATION": "memory://openbanking-landing",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        }
    )
    try:
        proc = subprocess.run(
            [sys.executable, __file__, str(report), str(warehouse), "openbanking_no_disk"],
            env=env,
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired as exc:  # dag.test waits for retries: a failed task hangs it
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else str(exc.stdout)
        pytest.fail(f"the DAG run did not finish in {exc.timeout} s:\n{output[-4000:]}")
    assert proc.returncode == 0 and report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(report.read_text())

    assert result["state"] == "success", result["task_states"]
    # The outage failed the first try of the accounts step: its retry (which reads the first
    # try's resume markers from the destination) ran under the same watch.
    assert result["tries"]["shard.land_accounts[0]"] == 2, result["tries"]
    assert {n for k, n in result["tries"].items() if k != "shard.land_accounts[0]"} == {1}, result["tries"]
    # The sharded DAG has no consent sensor any more (the consent check runs inside each shard), so
    # nothing defers here; the deferred sensor's triggerer process is audited by the e2e.
    assert result["landed_in_memory"] > 0, "the landing destination should hold the landed files"
    assert result["warehouse_rows"] > 0
    counters = sandbox.counters()
    assert counters["invalid_grant"] == 0
    assert counters["token_grants"]["refresh_token"] >= 1
    assert result["control_writes"] > 0, "the audit hook should have seen the control write"
    assert result["writes"] == [], "the provider wrote to the local disk:\n" + "\n".join(
        json.dumps(w) for w in result["writes"]
    )


# -- the child process --------------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = {
    "os.mkdir",
    "os.rename",
    "os.replace",
    "os.symlink",
    "os.link",
    "os.truncate",
    "shutil.copyfile",
    "shutil.copytree",
    "shutil.move",
    "shutil.make_archive",
    "tempfile.mkstemp",
    "tempfile.mkdtemp",
    "sqlite3.connect",
}


def _project_frame(filename: str) -> bool:
    """Code of the provider (not the sandbox bank) or of the example DAGs."""
    if filename.startswith(str(PROVIDER) + os.sep):
        return not filename.startswith(str(PROVIDER / "sandbox") + os.sep)
    return filename.startswith(str(REPO / "dags") + os.sep)


def _local_path(target: Any) -> str:
    """An absolute path; SQLite URIs (``file:/x.db?mode=ro``) become their file's path."""
    text = os.fsdecode(target)
    if text.startswith("file:"):
        text = text[len("file:") :].split("?", 1)[0]
    return os.path.abspath(text)


def _child(report: Path, warehouse: Path, conn_id: str) -> None:  # pragma: no cover - subprocess
    home = Path(os.environ["AIRFLOW_HOME"]).resolve()
    allowed_files = {str(warehouse.resolve()), str(home / "airflow.db")}
    allowed_dirs = (str(home / "logs") + os.sep, "/dev/", "/proc/")
    writes: list[dict[str, Any]] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        try:
            record(event, args)
        except Exception as exc:  # an audit hook's exception would break the audited call
            writes.append({"event": event, "audit_hook_error": repr(exc)})

    def record(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                if not any(c in mode for c in "wax+"):
                    return
            elif not (isinstance(flags, int) and flags & _WRITE_FLAGS):
                return
            targets = [path]
        elif event in _WRITE_EVENTS:
            targets = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        paths = [_local_path(t) for t in targets if isinstance(t, (str, bytes, os.PathLike))]
        if not paths or all(p in allowed_files or p.startswith(allowed_dirs) for p in paths):
            return
        frame = sys._getframe(1)
        stack = []
        while frame is not None:
            stack.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
            frame = frame.f_back
        if any(_project_frame(s.rsplit(":", 1)[0]) for s in stack):
            writes.append(
                {
                    "event": event,
                    "paths": paths,
                    "stack": [s for s in stack if "/site-packages/" not in s][:8],
                }
            )

    import fsspec
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.pool import Pool
    from airflow.sdk.io import attach

    from airflow_provider_openbanking.triggers.openbanking import OpenBankingTokenTrigger

    trigger_runs = 0
    original_run = OpenBankingTokenTrigger.run

    async def counting_run(self: Any) -> Any:
        nonlocal trigger_runs
        trigger_runs += 1
        async for event in original_run(self):
            yield event

    OpenBankingTokenTrigger.run = counting_run  # type: ignore[method-assign]
    # Airflow's ObjectStoragePath knows no memory:// by default: register fsspec's.
    attach("memory", fs=fsspec.filesystem("memory"))
    Pool.create_or_update_pool("openbanking_api", 4, "Open Banking API calls", include_deferred=False)
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag(MAIN_DAG)
    # The token outage fails the first try of the first task (its consent's transient errors
    # outlast the retry budget): its retry comes a second later, not after the DAG's 2 minutes.
    for task in dag.tasks:
        task.retry_delay = dt.timedelta(seconds=1)
        task.retry_exponential_backoff = False

    sys.addaudithook(audit)
    dagrun = dag.test(
        logical_date=dt.datetime(2026, 11, 19, tzinfo=dt.timezone.utc), run_conf={"conn_ids": [conn_id]}
    )

    from airflow.sdk import ObjectStoragePath
    from airflow.utils.session import create_session

    from airflow_provider_openbanking.landing import write_jsonl

    # Control: the same watch must see a provider write to the local disk (here the landing
    # writer pointed at a local directory), or an empty list above would prove nothing.
    control = report.parent / "control"
    seen_before = len(writes)
    write_jsonl(ObjectStoragePath(f"file://{control}/probe.jsonl"), [{"probe": 1}])
    control_writes = writes[seen_before:]
    del writes[seen_before:]

    with create_session() as session:
        task_states = {
            f"{ti.task_id}[{ti.map_index}]": str(getattr(ti.state, "value", ti.state))
            for ti in dagrun.get_task_instances(session=session)
        }
        tries = {
            f"{ti.task_id}[{ti.map_index}]": ti.try_number
            for ti in dagrun.get_task_instances(session=session)
        }
    landed = [p for p in ObjectStoragePath("memory://openbanking-landing").rglob("*") if p.is_file()]
    import sqlite3

    with sqlite3.connect(warehouse) as db:
        rows = db.execute("SELECT COUNT(*) FROM openbanking_transactions").fetchone()[0]
    report.write_text(
        json.dumps(
            {
                "state": str(getattr(dagrun.state, "value", dagrun.state)),
                "task_states": task_states,
                "tries": tries,
                "trigger_runs": trigger_runs,
                "landed_in_memory": len(landed),
                "warehouse_rows": rows,
                "writes": writes,
                "control_writes": len(control_writes),
            }
        )
    )


if __name__ == "__main__":  # pragma: no cover - the child process of the test above
    _child(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
