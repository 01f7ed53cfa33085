"""``make e2e``: the provider under Airflow's real services, in production shape, checked end to end.

``airflow dags test`` (``make demo``) runs tasks one at a time in one process on SQLite. This
script runs the example DAGs the way a production deployment does, every server on 127.0.0.1 on a
free port (``e2e/services.py`` for the back-ends):

- **PostgreSQL** (Debian's server binaries, a throw-away cluster) with two databases: ``airflow``,
  the metadata DB, and ``warehouse``, the DAGs' SQL warehouse (``apache-airflow-providers-postgres``);
- **Redis** (Debian's ``redis-server``): the Celery broker and result backend;
- **S3** (moto's standalone server): the landing destination through ``ObjectStoragePath``
  (``[openbanking] landing_destination = s3://aws_e2e@openbanking-e2e/landing``, the ``aws_e2e``
  connection carrying ``endpoint_url``), and Airflow's remote task logs;
- ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` sharing one
  ``AIRFLOW_HOME`` (``.e2e-home/``: "the scheduler host"), and **two** ``airflow celery worker``
  processes (CeleryExecutor), each with its own temporary ``AIRFLOW_HOME``, ``TMPDIR``, ``HOME`` and
  working directory and no local disk in common with the other or with the scheduler host; the
  repository and its venv stand for the image every host runs.

Scenario:

1. connections made the way users make them, ``airflow connections add`` (three ``openbanking``
   consents on the sandbox bank with rotating refresh tokens and 30 s access tokens, the Postgres
   warehouse, the S3 endpoint), ``airflow pools set``, ``airflow variables set``;
2. the main DAG is unpaused (the scheduler adds the latest interval's run) and triggered for two
   dates, the second run with a third consent whose bank gateway answers 503 on its token
   endpoint when the runs start: its sensor defers to the triggerer, and the gateway comes back
   once the scheduler has registered the deferral;
3. checks: every run and task instance succeeded; the warehouse table equals the banks' truth;
   the sensor went through ``deferred`` and its trigger fired in the triggerer; no
   ``invalid_grant``; the rotated refresh tokens are stored; the landed files are on S3; both
   Celery workers ran tasks; the provider wrote no file outside S3 and the workers' own
   directories (an audit hook in every worker and triggerer process, ``e2e/audit/``); nothing
   listens beyond 127.0.0.1; the shape (executor class, broker, databases, landing) as Airflow
   recorded it;
4. headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright) logs into the UI and
   screenshots the ``openbanking`` connection form, the run and the deferred sensor's log (read
   back from S3);
5. the sharded many-consent run (issue 14), when ``--consents N`` > 0: see ``e2e/many_consents.py``;
6. every service is stopped, and that is checked too.

Output goes to ``e2e-artifacts/`` (git-ignored): ``summary.json``, screenshots, the services' logs
and the task logs. The exit status is 0 only if every check passed; the last line is
``E2E PASSED`` or ``E2E FAILED`` with the list of failed checks.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402
    BIN,
    MARKER,
    Api,
    Checks,
    E2EError,
    E2EInterrupted,
    Processes,
    component_states,
    listening,
    run_cli,
    run_clis,
    run_pids,
    run_windows,
    say,
    sql_rows,
    wait_for,
)

HOME = REPO / ".e2e-home"
ARTIFACTS = REPO / "e2e-artifacts"
MAIN_DAG = "openbanking_accounts_transactions"
#: The e2e's own DAG (bundle ``e2e``, ``e2e/dags/``): a deferrable consent sensor, then the accounts.
GATE_DAG = "openbanking_e2e_consent_gate"
POOL = "openbanking_api"
POOL_SLOTS = 4
PARALLELISM = 4
WORKERS = ("worker-1", "worker-2")
WORKER_CONCURRENCY = 2
UTC = dt.timezone.utc
#: The consents every run covers (the Variable ``openbanking_conn_ids``): connection -> customer.
CONSENTS = {"openbanking_default": "cust-0001", "openbanking_customer_2": "cust-0002"}
#: A third consent, behind the consent gate of GATE_DAG, whose bank gateway (a second sandbox) is
#: down when its run starts: its sensor is the one that defers.
LATE_CONSENT = ("openbanking_customer_3", "cust-0003")
WAREHOUSE_CONN = "openbanking_warehouse"
AWS_CONN = "aws_e2e"
BUCKET = "openbanking-e2e"
LANDING = f"s3://{AWS_CONN}@{BUCKET}/landing"
REMOTE_LOGS = f"s3://{BUCKET}/airflow-logs"
EXECUTOR = "CeleryExecutor"
SCHEDULER_HOST = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Moto accepts any credentials; these are the AWS documentation's example key pair.
AWS_KEY = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
TERMINAL = {"success", "failed"}
AUDIT_DIR = HERE / "audit"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


# -- the deployment ---------------------------------------------------------------------------------


class Deployment:
    """The back-end services and the processes' environments (one per host)."""

    def __init__(self, run_id: str, root: Path) -> None:
        from services import free_port

        self.run_id = run_id
        self.root = root
        self.ports = {"api": free_port(), "worker_logs": free_port(), "trigger_logs": free_port()}
        self.base = f"http://127.0.0.1:{self.ports['api']}"
        self.services: list[Any] = []
        self.metadata_url = self.warehouse_url = self.broker_url = self.result_backend = ""
        self.s3_endpoint = ""
        self.pg: Any = None
        self.sockets_seen: list[dict[str, Any]] = []
        from cryptography.fernet import Fernet

        # One deployment, one configuration: every host gets the same Fernet key and JWT secret.
        self.fernet_key = Fernet.generate_key().decode()
        self.jwt_secret = secrets.token_urlsafe(64)

    def start_backends(self) -> None:
        from services import start_moto, start_postgres, start_redis

        self.pg = start_postgres(self.root / "postgres")
        self.services.append(self.pg)
        self.metadata_url = self.pg.create_database("airflow")
        self.warehouse_url = self.pg.create_database("warehouse")
        redis = start_redis(self.root / "redis")
        self.services.append(redis)
        # One Redis, two logical databases: the queue (broker) and the task states (result backend).
        self.broker_url = redis.url
        self.result_backend = redis.url.rsplit("/", 1)[0] + "/1"
        moto = start_moto(self.root / "moto")
        self.services.append(moto)
        self.s3_endpoint = moto.url
        import boto3

        s3 = self.s3()
        s3.create_bucket(Bucket=BUCKET)
        say(
            f"  PostgreSQL {self.pg.psql('SHOW server_version')} on 127.0.0.1:{self.pg.port} "
            f"(databases airflow, warehouse), Redis on 127.0.0.1:{redis.port}, "
            f"moto S3 on {moto.url} (bucket {BUCKET}; boto3 {boto3.__version__})"
        )

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=AWS_KEY[0],
            aws_secret_access_key=AWS_KEY[1],
            region_name="us-east-1",
        )

    def stop_backends(self) -> None:
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop()

    @property
    def groups(self) -> set[int]:
        return {s.proc.pid for s in self.services}

    def snapshot_listening(self, groups: set[int]) -> None:
        """Note the sockets this run's processes listen on now (checked at the end)."""
        self.sockets_seen += listening(run_pids(self.run_id, groups | self.groups))

    def shape(self) -> dict[str, str]:
        """What the log states about the deployment, from the configuration it is given."""
        return {
            "executor": f"airflow.providers.celery.executors.celery_executor.{EXECUTOR}",
            "workers": f"{len(WORKERS)} x airflow celery worker (concurrency {WORKER_CONCURRENCY}), "
            "each with its own temporary AIRFLOW_HOME/TMPDIR/HOME",
            "broker": self.broker_url.split(":", 1)[0] + "://",
            "result_backend": self.result_backend.split(":", 1)[0] + "://",
            "metadata_db": self.metadata_url.split(":", 1)[0],
            "warehouse_db": self.warehouse_url.split(":", 1)[0]
            + f" (database {WAREHOUSE_CONN} -> warehouse)",
            "landing": LANDING + f" (endpoint_url {self.s3_endpoint})",
            "task_logs": REMOTE_LOGS,
        }

    def env(self) -> dict[str, str]:
        """The environment of the scheduler host's processes and the CLI (``AIRFLOW_HOME=.e2e-home``)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__"))
            and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "PYTHONPATH")
        }
        env.update(
            {
                MARKER: self.run_id,
                "AIRFLOW_HOME": str(HOME),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                # Two DAG bundles: the example DAGs, and the e2e's own consent-gate DAG.
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                    [
                        {
                            "name": "dags-folder",
                            "classpath": LOCAL_BUNDLE,
                            "kwargs": {"path": str(REPO / "dags")},
                        },
                        {"name": "e2e", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(HERE / "dags")}},
                    ]
                ),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
                "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url.replace(
                    "postgresql://", "postgresql+psycopg2://", 1
                ),
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": self.result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                # Redis redelivers a task not acknowledged within this time: above the longest
                # task (the example DAG's runs time out after 6 h).
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.ports["api"]),
                "AIRFLOW__API__BASE_URL": self.base,
                "AIRFLOW__API__WORKERS": "1",
                # Where workers reach the Execution API (Airflow 3.3 reads it from [core]; [workers]
                # is its deprecated spelling there). Without it they call port 8080 and fail.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
                # Task logs go to S3: a worker's disk is its own, and Airflow's log servers would
                # listen on every interface (they take no address), so none is started.
                "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
                "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": REMOTE_LOGS,
                "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": AWS_CONN,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["worker_logs"]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["trigger_logs"]),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # Consent sensors wait in the triggerer (the sensor's `deferrable` default).
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
                "AIRFLOW__OPENBANKING__LANDING_DESTINATION": LANDING,
            }
        )
        return env

    def audited(self, env: dict[str, str], report: Path, allowed: list[Path]) -> dict[str, str]:
        """``env`` with the local-write audit hook of ``e2e/audit/sitecustomize.py`` armed."""
        return {
            **env,
            "PYTHONPATH": str(AUDIT_DIR),
            "OPENBANKING_E2E_AUDIT": str(report),
            "OPENBANKING_E2E_AUDIT_ALLOWED": os.pathsep.join(str(p) for p in allowed),
        }

    def worker_dir(self, name: str) -> Path:
        return self.root / name

    def worker_env(self, name: str) -> dict[str, str]:
        """A Celery worker "host": its own AIRFLOW_HOME, TMPDIR and HOME in its own directory."""
        wdir = self.worker_dir(name)
        for sub in ("tmp", "config"):
            (wdir / sub).mkdir(parents=True, exist_ok=True)
        # The cluster policy is configuration every host's image carries.
        shutil.copy(HOME / "config" / "airflow_local_settings.py", wdir / "config")
        env = self.env()
        env.update({"AIRFLOW_HOME": str(wdir), "TMPDIR": str(wdir / "tmp"), "HOME": str(wdir)})
        return self.audited(env, wdir / "audit.jsonl", [wdir])


LOCAL_SETTINGS = '''"""Cluster policy of the e2e deployment (written by e2e/run.py).

The example DAG has ``catchup=True`` from 2026-11-01: unpaused as it is, the scheduler would first
backfill every day since then. The e2e deployment turns catchup off, so unpausing schedules only
the latest interval, next to the two runs the e2e triggers.
"""


def dag_policy(dag):
    if dag.dag_id.startswith("openbanking_"):
        dag.catchup = False
'''


def connection_commands(
    dep: Deployment, banks: dict[str, Any], customers: dict[str, str]
) -> dict[str, list[str]]:
    """``airflow connections add`` / ``pools set`` / ``variables set``: what an admin types."""
    commands: dict[str, list[str]] = {}
    for conn_id, customer in customers.items():
        extra = {
            "refresh_token": banks[conn_id].grant_consent(customer),
            "provider_id": "1000",
            "scopes": "ACCOUNT_BASIC ACCOUNT_DETAILED TRANSACTIONS",
            "redirect_uri": "http://127.0.0.1:8976/callback",
        }
        commands[f"connections-add-{conn_id}"] = [
            "connections", "add", conn_id, "--conn-type", "openbanking",
            "--conn-description", f"Sandbox consent of {customer}",
            "--conn-host", banks[conn_id].url, "--conn-login", "demo-client",
            "--conn-password", "demo-secret", "--conn-extra", json.dumps(extra),
        ]  # fmt: skip
    commands[f"connections-add-{WAREHOUSE_CONN}"] = [
        "connections", "add", WAREHOUSE_CONN, "--conn-uri", dep.warehouse_url,
        "--conn-description", "e2e warehouse (PostgreSQL)",
    ]  # fmt: skip
    commands[f"connections-add-{AWS_CONN}"] = [
        "connections", "add", AWS_CONN, "--conn-type", "aws",
        "--conn-description", "S3-compatible endpoint (moto) for landing and task logs",
        "--conn-login", AWS_KEY[0], "--conn-password", AWS_KEY[1],
        "--conn-extra", json.dumps({"endpoint_url": dep.s3_endpoint, "region_name": "us-east-1"}),
    ]  # fmt: skip
    commands["pools-set"] = ["pools", "set", POOL, str(POOL_SLOTS), "Open Banking API calls"]
    commands["variables-set"] = ["variables", "set", "openbanking_conn_ids", json.dumps(list(CONSENTS))]
    return commands


# -- checks -----------------------------------------------------------------------------------------


def check_warehouse(
    checks: Checks,
    url: str,
    windows: dict[str, list[tuple[dt.date, dt.date]]],
    banks: dict[str, Any],
    accounts: dict[str, list[str]],
) -> None:
    """The Postgres table must hold exactly the bank's transactions of the windows the runs covered."""
    name = "warehouse (PostgreSQL) equals the bank's truth"
    try:
        covered = ", ".join(f"'{c}'" for c in accounts)  # LEGACY_CONN's row is checked on its own
        rows = sql_rows(
            url,
            "SELECT conn_id, account_id, transaction_id, status, amount FROM openbanking_transactions"
            f" WHERE conn_id IN ({covered})",
        )
    except Exception as exc:
        checks.add(name, False, f"cannot read openbanking_transactions: {type(exc).__name__}: {exc}")
        return
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


#: A connection no run covers: its old row must survive the migration, as consent ``default``.
LEGACY_CONN = "openbanking_retired"


def seed_legacy_table(
    url: str, consents: dict[str, str], accounts: dict[str, list[str]], dates: list[dt.datetime]
) -> None:
    """The warehouse as a 0.x deployment left it: the table of before consents, holding a row the
    bank no longer has inside a window the runs replace, and a row of a connection no run covers.
    The first load must migrate it (issue 14) on this real PostgreSQL."""
    import psycopg2

    from airflow_provider_openbanking.warehouse import LEGACY_0X_DDL

    conn_id = next(iter(consents))
    day = (dates[0] - dt.timedelta(days=1)).date().isoformat()
    with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cur:
        cur.execute(LEGACY_0X_DDL)
        cur.executemany(
            "INSERT INTO openbanking_transactions (conn_id, account_id, transaction_id, window_date, status, amount)"
            " VALUES (%s, %s, %s, %s, 'POSTED', 1.00)",
            [
                (conn_id, accounts[conn_id][0], "stale-0x-row", day),
                (LEGACY_CONN, "acct-old", "kept-0x-row", day),
            ],
        )
        db.commit()
    say(
        f"  warehouse: the 0.x table (no consent_id) with a stale row of {conn_id} and a row of {LEGACY_CONN}"
    )


def check_legacy_migrated(checks: Checks, url: str) -> None:
    name = "0.x warehouse table migrated on PostgreSQL"
    try:
        columns = {
            r[0]
            for r in sql_rows(
                url,
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'openbanking_transactions'",
            )
        }
        key = [
            r[0]
            for r in sql_rows(
                url,
                """SELECT a.attname FROM pg_index i JOIN pg_attribute a
            ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = 'openbanking_transactions'::regclass AND i.indisprimary ORDER BY a.attname""",
            )
        ]
        stale = sql_rows(
            url, "SELECT COUNT(*) FROM openbanking_transactions WHERE transaction_id = 'stale-0x-row'"
        )[0][0]
        kept = sql_rows(
            url, f"SELECT consent_id FROM openbanking_transactions WHERE conn_id = '{LEGACY_CONN}'"
        )
    except Exception as exc:
        checks.add(name, False, f"{type(exc).__name__}: {exc}")
        return
    checks.add(
        name,
        "consent_id" in columns and "consent_id" in key and stale == 0 and kept == [("default",)],
        f"primary key {sorted(key)}; the stale row inside a replaced window: {'gone' if stale == 0 else 'STILL THERE'}; "
        f"the other connection's row kept as consent {[r[0] for r in kept]}",
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


def check_triggerer(
    checks: Checks,
    api: Api,
    dep: Deployment,
    deferred: dict[str, Any],
    tis_by_run: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    """A consent sensor went through ``deferred``, its trigger ran in the triggerer and fired
    success, and the sensor then finished on a worker; its log, uploaded by the worker, is read
    back from S3 through the REST API as the UI reads it."""
    name = "the deferrable token sensor ran in the triggerer"
    if not deferred:
        checks.add(name, False, "no sensor was seen deferred")
        return
    ti = next(
        (
            t
            for t in tis_by_run.get((deferred["dag_id"], deferred["dag_run_id"]), [])
            if t["task_id"] == deferred["task_id"] and t["map_index"] == deferred["map_index"]
        ),
        None,
    )
    # What the trigger logged: the triggerer writes attempt=N.log.trigger.<id>.log and uploads it
    # to the remote log folder (its local copy is then empty).
    mapped = f"map_index={deferred['map_index']}/" if deferred["map_index"] >= 0 else ""
    prefix = (
        f"airflow-logs/dag_id={deferred['dag_id']}/run_id={deferred['dag_run_id']}"
        f"/task_id={deferred['task_id']}/{mapped}"
    )
    s3 = dep.s3()
    # The triggerer uploads the trigger's log when the trigger ends, on its own schedule: the
    # copy on S3 can lag the task's success by a few seconds, so it is read until it shows the
    # event (or 60 s have passed).
    deadline = time.monotonic() + 60
    while True:
        trigger_logs = [
            obj["Key"]
            for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
            if ".log.trigger." in obj["Key"]
        ]
        events = []
        for key in trigger_logs:
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode(errors="replace")
            for line in body.splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("event") == "Trigger fired event":
                        events.append(str(record.get("result")))
        if events or time.monotonic() >= deadline:
            break
        time.sleep(2)
    task_log = ""
    for try_number in range(1, int((ti or {}).get("try_number") or 1) + 1):
        with contextlib.suppress(E2EError):
            task_log += api.task_log(
                deferred["dag_id"],
                deferred["dag_run_id"],
                deferred["task_id"],
                deferred["map_index"],
                try_number,
            )
    deferred_in_task_log = "deferring to the triggerer" in task_log
    from_s3 = f"s3://{BUCKET}/" in task_log
    fired_success = any("'status': 'success'" in e for e in events)
    checks.add(
        name,
        ti is not None and ti["state"] == "success" and fired_success and deferred_in_task_log and from_s3,
        f"{deferred['task_id']}[{deferred['map_index']}] of {deferred['dag_run_id']} was seen deferred "
        f"(its log, read from S3: {from_s3}, says so: {deferred_in_task_log}), its trigger log "
        f"{[k.rsplit('/', 1)[-1] for k in trigger_logs]} on S3 shows {events[:1] or 'no event'}, then the task "
        f"{ti['state'] if ti else 'is missing'}",
    )


def worker_task_logs(dep: Deployment) -> dict[str, list[str]]:
    """Per worker, the task-instance logs on its own disk (the task ran there)."""
    out = {}
    for name in WORKERS:
        logs = dep.worker_dir(name) / "logs"
        out[name] = sorted(
            str(p.relative_to(logs)) for p in logs.glob("dag_id=*/run_id=*/task_id=*/**/attempt=*.log")
        )
    return out


def read_audit(path: Path) -> tuple[int, list[dict[str, Any]], int]:
    """(processes armed, provider writes outside the allowed directories, writes inside them)."""
    if not path.exists():
        return 0, [], 0
    armed, bad, inside = 0, [], 0
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if "armed" in record:
                armed += 1
            elif record.get("allowed"):
                inside += 1
            else:
                bad.append(record)
    return armed, bad, inside


def audit_control(dep: Deployment, logs: Path) -> int:
    """The same hook must see a provider write to the local disk, or an empty report proves
    nothing: the landing writer, pointed at a local path outside the worker's directory, in a
    process with worker-1's environment. Returns how many such writes it reported."""
    report = dep.root / "audit-control.jsonl"
    target = dep.root / "control" / "probe.jsonl"
    env = dep.audited(dep.worker_env(WORKERS[0]), report, [dep.worker_dir(WORKERS[0])])
    code = (
        "from airflow.sdk import ObjectStoragePath\n"
        "from airflow_provider_openbanking.landing import write_jsonl\n"
        f"write_jsonl(ObjectStoragePath({('file://' + str(target))!r}), [{{'probe': 1}}])\n"
    )
    with open(logs / "audit-control.log", "wb") as sink:
        subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=str(dep.root),
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    return len(read_audit(report)[1])


def check_no_local_writes(checks: Checks, dep: Deployment, logs: Path) -> None:
    reports = {name: dep.worker_dir(name) / "audit.jsonl" for name in WORKERS}
    reports["triggerer"] = HOME / "triggerer-audit.jsonl"
    armed: dict[str, int] = {}
    bad: list[dict[str, Any]] = []
    inside = 0
    for name, path in reports.items():
        n, outside, ok = read_audit(path)
        armed[name] = n
        bad += [{**r, "process": name} for r in outside]
        inside += ok
    control = audit_control(dep, logs)
    stray = [
        str(p)
        for p in (HOME / "openbanking", *(dep.worker_dir(w) / "openbanking" for w in WORKERS))
        if p.exists()
    ]
    checks.add(
        "the provider wrote no file outside S3 and the workers' own directories",
        all(armed.values()) and not bad and control > 0 and not stray,
        f"audit hook armed in {armed} processes; provider writes outside: {len(bad)}, inside a "
        f"worker's directory: {inside}; control write seen: {control > 0}"
        + (f"; default landing directories exist: {stray}" if stray else "")
        + (f"; first: {json.dumps(bad[:3])[:1500]}" if bad else ""),
    )


def check_landing(checks: Checks, dep: Deployment, conn_ids: list[str]) -> dict[str, int]:
    keys: list[str] = []
    for page in dep.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="landing/"):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    from airflow_provider_openbanking.landing import file_format_of

    # Records files in any landing format (jsonl.gz by default); batch bookkeeping left out.
    jsonl = [k for k in keys if file_format_of(k) and not k.startswith("landing/_manifests/")]
    partial = [k for k in keys if k.endswith(".partial")]
    datasets = sorted({k.split("/")[1] for k in jsonl})
    missing = [c for c in conn_ids if not any(f"/conn_id={c}/" in k for k in jsonl)]
    checks.add(
        "landed files are on the S3 endpoint",
        bool(jsonl) and not partial and not missing,
        f"{len(jsonl)} records files under {LANDING} (datasets {datasets}), {len(partial)} .partial left"
        + (f"; no files for {missing}" if missing else ""),
    )
    return {"jsonl": len(jsonl), "partial": len(partial)}


def check_shape(
    checks: Checks, dep: Deployment, per_worker: dict[str, list[str]], scheduler_log: Path
) -> dict[str, Any]:
    """The shape as Airflow recorded it: the scheduler's executor, the task instances' Celery
    task ids, the metadata and warehouse servers; and where the tasks ran."""
    shape: dict[str, Any] = {}
    try:
        shape["scheduler_executor"] = sorted(
            {
                line.split("Loaded executor:", 1)[1].split("[", 1)[0].strip().strip(":")
                for line in scheduler_log.read_text(errors="replace").splitlines()
                if "Loaded executor:" in line
            }
        )
        n, celery_ids, queues = sql_rows(
            dep.metadata_url,
            "SELECT COUNT(*), COUNT(external_executor_id), string_agg(DISTINCT queue, ',') FROM task_instance",
        )[0]
        shape["task_instances"] = {"total": n, "with_celery_task_id": celery_ids, "queues": queues}
        shape["metadata_server"] = sql_rows(dep.metadata_url, "SELECT version()")[0][0].split(" on ")[0]
        shape["warehouse_server"] = sql_rows(dep.warehouse_url, "SELECT current_database(), version()")[0][0]
    except Exception as exc:
        checks.add("deployment shape as Airflow recorded it", False, f"{type(exc).__name__}: {exc}")
        return shape
    counts = {name: len(logs) for name, logs in per_worker.items()}
    checks.add(
        "deployment shape as Airflow recorded it",
        any(EXECUTOR in str(e) for e in shape["scheduler_executor"]) and n > 0 and celery_ids == n,
        f"the scheduler loaded {shape['scheduler_executor']}; {celery_ids}/{n} task instances carry a "
        f"Celery task id (queue {queues}); metadata DB {shape['metadata_server']}; warehouse "
        f"database {shape['warehouse_server']!r} on the same server",
    )
    checks.add(
        "tasks ran on both Celery workers",
        all(counts.values()) and len(counts) == len(WORKERS),
        f"task logs on each worker's own disk: {counts}",
    )
    return shape


def check_listening(checks: Checks, dep: Deployment, procs: Processes) -> list[dict[str, Any]]:
    """Every socket this run's processes listened on, seen now and at the earlier snapshots."""
    dep.snapshot_listening(procs.group_ids)
    sockets = sorted(
        {(s["pid"], s["port"]): s for s in dep.sockets_seen}.values(), key=lambda s: (s["port"], s["pid"])
    )
    beyond = [s for s in sockets if s["address"] != "127.0.0.1"]
    checks.add(
        "nothing listens beyond 127.0.0.1",
        bool(sockets) and not beyond,
        f"{len(sockets)} listening sockets of this run: "
        + ", ".join(sorted({f"{s['name']}@{s['address']}:{s['port']}" for s in sockets}))
        + (f"; BEYOND LOOPBACK: {beyond}" if beyond else ""),
    )
    return sockets


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
        "--consents",
        type=int,
        default=120,
        help="consents of the sharded many-consent run (issue 14) after the main scenario; 0: skip it",
    )
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
    fd = os.open(HERE, os.O_RDONLY)
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
        raise E2EInterrupted(f"overall timeout of {args.timeout:.0f} s")

    def on_signal(signum: int, frame: Any) -> None:
        raise E2EInterrupted(f"interrupted ({signal.Signals(signum).name})")

    say(f"Open Banking provider under Airflow's real services, production shape (run {run_id})")
    lock = take_lock(args.lock_timeout)  # noqa: F841 - held (open) until the process exits
    signal.signal(signal.SIGALRM, on_alarm)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.alarm(int(args.timeout))
    for path in (HOME, ARTIFACTS):
        if path.exists():
            shutil.rmtree(path)
    (HOME / "config").mkdir(parents=True)
    (HOME / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    logs = ARTIFACTS / "logs"
    logs.mkdir(parents=True)
    root = Path(tempfile.mkdtemp(prefix="openbanking-e2e-"))
    say(
        f"  AIRFLOW_HOME={HOME.relative_to(REPO)} (scheduler host)  workers under {root}  artifacts={ARTIFACTS.relative_to(REPO)}"
    )

    from airflow_provider_openbanking.sandbox.testing import SandboxServer

    dep = Deployment(run_id, root)
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
    summary: dict[str, Any] = {"run": run_id, "ports": dep.ports, "checks": checks.results, "timings": {}}
    timings: dict[str, float] = summary["timings"]
    api = Api(dep.base)
    error = ""
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
        say("Back-end services")
        dep.start_backends()
        summary["shape"] = shape = dep.shape()
        say("Shape: " + "; ".join(f"{k} {v}" for k, v in shape.items()))
        env = dep.env()
        run_cli(env, HOME, "db", "migrate", log=logs / "db-migrate.log")
        phase("setup")

        say(
            f"Starting {', '.join(SCHEDULER_HOST)} (API on {dep.base}) and {len(WORKERS)} Celery workers "
            f"({EXECUTOR}, concurrency {WORKER_CONCURRENCY} each)"
        )
        triggerer_env = dep.audited(env, HOME / "triggerer-audit.jsonl", [])
        for name in SCHEDULER_HOST:
            argv = [str(BIN / "airflow"), name]
            if name in ("scheduler", "triggerer"):
                argv.append("--skip-serve-logs")
            procs.start(name, argv, triggerer_env if name == "triggerer" else env, logs / f"{name}.log", HOME)
        for name in WORKERS:
            procs.start(
                name,
                [
                    str(BIN / "airflow"),
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{name}@%h",
                    "--concurrency",
                    str(WORKER_CONCURRENCY),
                    "--skip-serve-logs",
                ],
                dep.worker_env(name),
                logs / f"{name}.log",
                dep.worker_dir(name),
            )

        # While the services start: what an admin types, straight into the metadata DB.
        say("Connections, pool and Variable with the airflow CLI")
        run_clis(env, HOME, connection_commands(dep, banks, customers), logs)
        phase("configured")

        def healthy() -> bool:
            procs.check_alive()
            states = component_states(api.health())
            workers_ready = all(" ready." in procs.logs[w].read_text(errors="replace") for w in WORKERS)
            return workers_ready and all(s == "healthy" for s in states.values())

        wait_for("the services and both Celery workers to report ready", healthy, timeout=300)
        password_file = HOME / "simple_auth_manager_passwords.json.generated"
        wait_for("the admin password file", password_file.exists, timeout=60, interval=1)
        password = json.loads(password_file.read_text())["admin"]
        api.login(password)
        say(f"  healthy: {component_states(api.health())}; Celery workers {', '.join(WORKERS)} ready")
        accounts = {
            conn_id: [a["accountId"] for a in banks[conn_id].truth_accounts(customer)]
            for conn_id, customer in customers.items()
        }

        def dags_parsed() -> bool:
            procs.check_alive()
            errors = api.call("GET", "/importErrors")
            if errors and errors.get("total_entries"):
                raise E2EError(f"DAG import errors: {json.dumps(errors)[:2000]}")
            return all(api.call("GET", f"/dags/{d}", ok=(404,)) is not None for d in (MAIN_DAG, GATE_DAG))

        wait_for(f"{MAIN_DAG} and {GATE_DAG} to be parsed", dags_parsed, timeout=300)
        phase("services_up")

        seed_legacy_table(dep.warehouse_url, CONSENTS, accounts, dates)
        # The late consent's token endpoint is down when its gate starts: the sensor's own check
        # fails, so it defers (`[operators] default_deferrable`) and waits in the triggerer.
        gateway.inject({"kind": "status", "status": 503, "path": "/api/v1/token", "count": 1_000_000})
        for dag_id in (MAIN_DAG, GATE_DAG):
            api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        triggered: list[tuple[str, str]] = []
        for logical in dates:
            body: dict[str, Any] = {
                "dag_run_id": f"e2e__{logical:%Y-%m-%d}",
                "logical_date": logical.isoformat(),
                "note": "triggered by make e2e",
            }
            triggered.append(
                (MAIN_DAG, api.call("POST", f"/dags/{MAIN_DAG}/dagRuns", json=body)["dag_run_id"])
            )
        gate_body = {
            "dag_run_id": "e2e__gate",
            "logical_date": dates[-1].isoformat(),
            "note": "triggered by make e2e",
        }
        triggered.append(
            (GATE_DAG, api.call("POST", f"/dags/{GATE_DAG}/dagRuns", json=gate_body)["dag_run_id"])
        )
        say(
            f"Unpaused {MAIN_DAG} (consents {', '.join(CONSENTS)}) and triggered it for "
            f"{', '.join(r for d, r in triggered if d == MAIN_DAG)}; triggered {GATE_DAG} for "
            f"{late_conn}, whose token endpoint is down"
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
            runs = [{**r, "dag_id": d} for d in (MAIN_DAG, GATE_DAG) for r in api.dag_runs(d)]
            if not outage_over:
                if not deferred:
                    for ti in api.task_instances(GATE_DAG, state="deferred"):
                        deferred = {
                            k: ti.get(k)
                            for k in ("dag_id", "dag_run_id", "task_id", "map_index", "try_number")
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
            ids = {(r["dag_id"], r["dag_run_id"]) for r in runs}
            if set(triggered) <= ids and all(r["state"] in TERMINAL for r in runs) and outage_over:
                break
            if time.monotonic() > runs_deadline:
                raise E2EError(f"runs not finished after {args.runs_timeout:.0f} s: {report}")
            time.sleep(3)
        phase("runs")
        dep.snapshot_listening(procs.group_ids)

        say("Checks")
        tis_by_run = {
            (r["dag_id"], r["dag_run_id"]): api.task_instances(r["dag_id"], r["dag_run_id"]) for r in runs
        }
        summary["runs"] = [
            {
                k: r.get(k)
                for k in (
                    "dag_id",
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
            f"{dag_id}/{rid}": sorted(
                f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in tis if t["state"] != "success"
            )
            for (dag_id, rid), tis in tis_by_run.items()
        }
        checks.add(
            "every run and task instance succeeded",
            set(triggered) <= set(tis_by_run)
            and all(r["state"] == "success" for r in runs)
            and not any(not_ok.values()),
            f"{len(runs)} runs ({', '.join(sorted(r['dag_id'].removeprefix('openbanking_') + ':' + r['run_type'] for r in runs))}), "
            f"{sum(map(len, tis_by_run.values()))} task instances"
            + (
                f"; not successful: { {k: v for k, v in not_ok.items() if v} }"
                if any(not_ok.values())
                else ""
            ),
        )
        windows = run_windows([r for r in runs if r["dag_id"] == MAIN_DAG], list(CONSENTS))
        check_warehouse(checks, dep.warehouse_url, windows, banks, {c: accounts[c] for c in CONSENTS})
        check_legacy_migrated(checks, dep.warehouse_url)
        check_triggerer(checks, api, dep, deferred, tis_by_run)
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
            "rotated refresh tokens are kept in the consent store (Variables)",
            all(f"openbanking_token__{c}" in keys for c in customers),
            f"Variables: {keys}",
        )
        summary["landing"] = check_landing(checks, dep, list(customers))
        per_worker = worker_task_logs(dep)
        summary["shape_recorded"] = check_shape(checks, dep, per_worker, logs / "scheduler.log")
        phase("checks")

        if not args.no_browser:
            say("Headless Chromium: connection form and DAG run screenshots")
            from browser import check_form, screenshots

            good = [rid for d, rid in triggered if d == MAIN_DAG and (d, rid) in tis_by_run]
            try:
                ui = screenshots(
                    MAIN_DAG, dep.base, password, good[-1] if good else None, deferred, ARTIFACTS
                )
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

        if args.consents > 0:
            from many_consents import run_many_consents

            say(f"Sharded many-consent run: {args.consents} consents of one connection")
            summary["many_consents"] = run_many_consents(
                args.consents, dep, api, procs, checks, logs, dates[-1], bank_options
            )
            phase("many_consents")

        say("Local disk and network")
        check_no_local_writes(checks, dep, logs)
        summary["listening"] = check_listening(checks, dep, procs)

        if args.hold:
            say(f"Holding for {args.hold:.0f} s: UI {dep.base} (admin; password in {password_file})")
            time.sleep(args.hold)
    except (E2EError, E2EInterrupted) as exc:
        error = str(exc)
        say(f"E2E FAILED: {exc}")
    except Exception:
        error = traceback.format_exc()
        say(f"E2E FAILED with an unexpected error:\n{error}")
    finally:
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # stopping is not interrupted
            signal.signal(sig, signal.SIG_IGN)
        say("Stopping every service started here")
        groups = procs.group_ids | dep.groups
        procs.stop_all()
        bank.stop()
        gateway.stop()
        dep.stop_backends()
        leftovers = procs.sweep()
        still = listening(run_pids(run_id, groups))
        alive = [s.name for s in dep.services if s.proc.poll() is None] + [
            n for n, p in procs.procs.items() if p.poll() is None
        ]
        summary["leftover_processes"] = leftovers
        checks.add(
            "every service stopped",
            not leftovers and not still and not alive,
            f"{len(procs.procs)} Airflow processes and {len(dep.services)} back-ends stopped by process group"
            + (f"; killed stragglers {leftovers}" if leftovers else "")
            + (f"; still listening {still}" if still else "")
            + (f"; still alive {alive}" if alive else ""),
        )
        with contextlib.suppress(Exception):
            if (HOME / "logs").exists():
                shutil.copytree(HOME / "logs", ARTIFACTS / "task-logs" / "scheduler-host", dirs_exist_ok=True)
            for name in WORKERS:
                wlogs = dep.worker_dir(name) / "logs"
                if wlogs.exists():
                    shutil.copytree(wlogs, ARTIFACTS / "task-logs" / name, dirs_exist_ok=True)
                if (dep.worker_dir(name) / "audit.jsonl").exists():
                    shutil.copy(dep.worker_dir(name) / "audit.jsonl", logs / f"{name}-audit.jsonl")
        shutil.rmtree(root, ignore_errors=True)
        if error:
            summary["error"] = error
        status = 0 if checks.ok and not error else 1
        summary["seconds"] = round(time.monotonic() - _started, 1)
        summary["ok"] = status == 0
        (ARTIFACTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    seconds = time.monotonic() - _started
    if status == 0:
        say(f"E2E PASSED in {seconds:.0f} s ({timings})")
    else:
        failed = checks.failed + ([f"the run stopped early: {error.splitlines()[0][:300]}"] if error else [])
        say(f"E2E FAILED in {seconds:.0f} s ({timings}); failed checks:")
        for item in failed:
            say(f"  - {item}")
    return status


_started = time.monotonic()

if __name__ == "__main__":
    sys.exit(main())
