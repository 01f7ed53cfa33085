"""The README's SQLite warehouse example works as written (issue 15, item 10).

``--conn-uri sqlite:////abs/path/warehouse.db`` does not: Airflow puts the path in ``schema`` and
leaves ``host`` empty (older versions refuse it with "invalid uri authority"), and the SQLite hook
opens ``host``. The README's two forms are made with ``airflow connections add`` in the session's
metadata DB and used by a real task that loads landed transactions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from tests.dags.test_warehouse import posted
from tests.operators.dagrun_helpers import run_dag

UTC = dt.timezone.utc


def _add(conn_id: str, *args: str) -> Any:
    """``airflow connections add`` into the session's metadata DB; the connection as stored."""
    from airflow.models import Connection

    done = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "add", conn_id, *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    return Connection.get_connection_from_secrets(conn_id)


def test_the_readme_forms_of_a_sqlite_warehouse_connection_load(tmp_path: Path):
    by_host = tmp_path / "warehouse.db"
    by_uri = tmp_path / "warehouse uri.db"
    from airflow.models import Connection

    assert _add("ob_wh_host", "--conn-type", "sqlite", "--conn-host", str(by_host)).host == str(by_host)
    encoded = str(by_uri).replace("%", "%25").replace("/", "%2F").replace(" ", "%20")
    assert _add("ob_wh_uri", "--conn-uri", f"sqlite://{encoded}").host == str(by_uri)
    # The form that looks right but is not (parsed as `connections add` parses it): the path lands
    # in `schema` and `host` stays empty.
    wrong = Connection(conn_id="ob_wh_wrong", uri=f"sqlite:///{tmp_path}/wrong.db")
    assert not wrong.host and wrong.schema == f"{tmp_path}/wrong.db"

    landed = tmp_path / "landing" / "account_id=acc-1.jsonl"
    landed.parent.mkdir(parents=True)
    landed.write_text(
        "".join(json.dumps(r) + "\n" for r in [posted("t1", "2026-11-05", 5), posted("t2", "2026-11-06", 7)])
    )
    result = {
        "dataset": "transactions",
        "conn_id": "openbanking_default",
        "query_start": "2026-10-24",
        "query_end": "2026-11-06",
        "accounts": {"acc-1": {"records": 2, "pages": 1, "path": f"file://{landed}"}},
        "skipped": {},
    }

    with DAG("ob_sqlite_example", schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=UTC)) as dag:

        @task
        def load(warehouse_conn_id: str) -> dict[str, Any]:
            from airflow_provider_openbanking.example_dags_support import load_transactions

            return load_transactions(result, warehouse_conn_id)

        load.override(task_id="by_host")("ob_wh_host")
        load.override(task_id="by_uri")("ob_wh_uri")

    outcome = run_dag(dag, dt.datetime(2026, 11, 7, tzinfo=UTC))

    assert outcome.states == {"by_host": "success", "by_uri": "success"}
    for db in (by_host, by_uri):
        with sqlite3.connect(db) as conn:
            ids = sorted(r[0] for r in conn.execute("SELECT transaction_id FROM openbanking_transactions"))
        assert ids == ["t1", "t2"], db
