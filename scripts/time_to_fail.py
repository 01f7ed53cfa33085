"""Measure how long a task takes to fail, per kind of bad input (the README's fault table).

In a throw-away ``AIRFLOW_HOME`` with the sandbox bank on a free loopback port, one DAG run
(``dag.test()``) of one ``OpenBankingAccountsOperator`` task per failure kind, each with the
example DAGs' ``retries=3`` (2 minutes, exponential). Per task: the state, the tries it used, and
the time from the first try's start to the task's failure, read from the task instance.

- refused port: the connection's host is a loopback port nobody listens on (default retry
  policy: 6 attempts in at most 120 s); this one has ``retries=0`` -- it is transient by nature
  (a server that is down may come back), so Airflow's retries *would* run it again
- wrong client secret, malformed field (``timeout: "soon"``), unknown connection id,
  unwritable destination (a path under a regular file): not retryable, fail at try 1

Usage: ``.venv/bin/python scripts/time_to_fail.py`` (about a minute); prints a Markdown table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

UTC = dt.timezone.utc


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _setup_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="ob-ttf-home-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    (home / "dags").mkdir()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return home


def _sync(dag: Any) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def measure() -> list[dict[str, Any]]:
    home = _setup_home()
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    from airflow_provider_openbanking.operators.openbanking import OpenBankingAccountsOperator
    from airflow_provider_openbanking.sandbox.testing import SandboxServer

    with SandboxServer(customers=2, accounts_per_customer=2, transactions_per_account=5) as sandbox:

        def conn(conn_id: str, **change: Any) -> str:
            value: dict[str, Any] = {
                "conn_type": "openbanking",
                "host": sandbox.url,
                "login": "demo-client",
                "password": "demo-secret",
                "extra": {"refresh_token": sandbox.grant_consent(), "provider_id": "1000"},
            }
            extra = change.pop("extra", {})
            value.update(change)
            value["extra"].update(extra)
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(value)
            return conn_id

        a_file = home / "a-file.txt"
        a_file.write_text("not a directory")
        dest = str(home / "landing")
        retries = {"retries": 3, "retry_delay": dt.timedelta(minutes=2), "retry_exponential_backoff": 2.0}
        kinds = [
            (
                "refused port (host 127.0.0.1:<closed port>)",
                "refused",
                conn("ob_refused", host=f"http://127.0.0.1:{_refused_port()}"),
                dest,
                {"retries": 0},
            ),
            (
                "wrong client secret",
                "wrong_secret",
                conn("ob_wrong_secret", password="not-the-secret"),
                dest,
                retries,
            ),
            (
                'malformed field (`timeout: "soon"`)',
                "malformed",
                conn("ob_soon", extra={"timeout": "soon"}),
                dest,
                retries,
            ),
            ("unknown connection id", "unknown", "ob_nowhere", dest, retries),
            (
                "unwritable destination (under a regular file)",
                "unwritable",
                conn("ob_ok"),
                str(a_file / "landing"),
                retries,
            ),
        ]
        with DAG("ob_time_to_fail", schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=UTC)) as dag:
            # dag.test() starts its in-process API on the first task: keep that out of the figures
            warmup = EmptyOperator(task_id="warmup")
            for _, task_id, conn_id, destination, args in kinds:
                warmup >> OpenBankingAccountsOperator(
                    task_id=task_id, openbanking_conn_id=conn_id, destination=destination, **args
                )
        _sync(dag)
        run = dag.test(logical_date=dt.datetime(2026, 11, 17, tzinfo=UTC))
        requests = sandbox.counters()["requests"]
        with create_session() as session:
            tis = {ti.task_id: ti for ti in run.get_task_instances(session=session)}
            rows = []
            for label, task_id, *_ in kinds:
                ti = tis[task_id]
                rows.append(
                    {
                        "kind": label,
                        "task_id": task_id,
                        "state": str(getattr(ti.state, "value", ti.state)),
                        "tries": ti.try_number,
                        "seconds": round((ti.end_date - ti.start_date).total_seconds(), 1),
                    }
                )
    rows.append({"kind": "requests the sandbox saw", "requests": requests})
    return rows


def main() -> int:
    rows = measure()
    print("| failure | state | tries used | time to fail |")
    print("|---|---|---|---|")
    for row in rows:
        if "task_id" in row:
            print(f"| {row['kind']} | {row['state']} | {row['tries']} | {row['seconds']} s |")
    print()
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
