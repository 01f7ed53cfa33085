"""Fail fast, clearly, once (issue 15): what retrying cannot fix ends the task at its first try.

Every task here has ``retries=3``, as the example DAGs do; the tries are counted on the task
instance. A wrong client secret, a malformed connection field (made with ``airflow connections
add`` in the session's throw-away metadata DB), an unknown connection id and an unwritable
destination all fail at try 1 with a message naming what to fix; the destination is probed before
any request (counted at the sandbox). A transient fault stays retryable: Airflow's retry lands it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.sdk import DAG

from airflow_provider_openbanking.landing import PROBE_PREFIX
from airflow_provider_openbanking.operators.openbanking import OpenBankingAccountsOperator
from tests.faults.harness import log_text
from tests.operators.dagrun_helpers import run_dag

pytestmark = pytest.mark.faults

UTC = dt.timezone.utc
LOGICAL = dt.datetime(2026, 11, 17, tzinfo=UTC)
RETRIES = {"retries": 3, "retry_delay": dt.timedelta(seconds=0)}


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=UTC), catchup=False)


def _airflow_connections_add(conn_id: str, *args: str) -> None:
    """``airflow connections add`` into the test session's metadata DB, as a user would."""
    airflow = [sys.executable, "-m", "airflow"]
    done = subprocess.run(
        [*airflow, "connections", "add", conn_id, *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr


def test_unfixable_failures_end_the_task_at_its_first_try(make_conn, sandbox, tmp_path, capfd, caplog):
    good = make_conn("ob_ff_good", customer_id="cust-0001")
    wrong_secret = make_conn("ob_ff_wrong_secret", customer_id="cust-0002", password="not-the-secret")
    _airflow_connections_add(
        "ob_ff_soon",
        "--conn-type",
        "openbanking",
        "--conn-host",
        sandbox.url,
        "--conn-login",
        "demo-client",
        "--conn-password",
        "demo-secret",
        "--conn-extra",
        json.dumps({"refresh_token": sandbox.grant_consent("cust-0003"), "timeout": "soon"}),
    )
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a directory")
    dest = tmp_path / "landing"
    with _dag("ob_ff_unfixable") as dag:
        OpenBankingAccountsOperator(
            task_id="wrong_secret", openbanking_conn_id=wrong_secret, destination=str(dest), **RETRIES
        )
        OpenBankingAccountsOperator(
            task_id="malformed", openbanking_conn_id="ob_ff_soon", destination=str(dest), **RETRIES
        )
        OpenBankingAccountsOperator(
            task_id="unknown_conn", openbanking_conn_id="ob_ff_nowhere", destination=str(dest), **RETRIES
        )
        OpenBankingAccountsOperator(
            task_id="under_a_file",
            openbanking_conn_id=good,
            destination=str(a_file / "landing"),
            **RETRIES,
        )
        OpenBankingAccountsOperator(
            task_id="in_proc", openbanking_conn_id=good, destination="/proc/openbanking-landing", **RETRIES
        )

    result = run_dag(dag, LOGICAL)

    assert set(result.states.values()) == {"failed"}, result.states
    assert result.tries == dict.fromkeys(result.states, 1), "no retry was spent on any of them"
    log = log_text(capfd, caplog)
    assert (
        "Connection 'ob_ff_wrong_secret': field 'login/password' were rejected by POST /api/v1/token" in log
    )
    assert "Connection 'ob_ff_soon': field 'timeout' must be a number, got 'soon'" in log
    assert (
        "Connection 'ob_ff_nowhere' is not defined: create it with `airflow connections add ob_ff_nowhere "
        "--conn-type openbanking" in log
    )
    assert f"The landing destination file://{a_file}/landing cannot be written: could not create" in log
    assert "The landing destination file:///proc/openbanking-landing cannot be written" in log
    assert not any(dest.rglob("*")) if dest.exists() else True
    assert not list(tmp_path.rglob(f"{PROBE_PREFIX}*")), "no probe object is left behind"


def test_a_destination_under_a_file_fails_once_with_no_request(make_conn, sandbox, tmp_path, capfd, caplog):
    conn_id = make_conn("ob_ff_probe2")
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("x")
    with _dag("ob_ff_probe2") as dag:
        OpenBankingAccountsOperator(
            task_id="accounts", openbanking_conn_id=conn_id, destination=str(a_file / "sub"), **RETRIES
        )
    assert sandbox.counters()["requests"] == {}
    result = run_dag(dag, LOGICAL)
    assert result.states == {"accounts": "failed"} and result.tries == {"accounts": 1}
    assert sandbox.counters()["requests"] == {}, "no API request before the destination is proven"
    log = log_text(capfd, caplog)
    message = f"The landing destination file://{a_file}/sub cannot be written: could not create the directory"
    assert message in log
    assert "[Errno 2]" not in log.replace(message, ""), "the cause is said once, in that message"


def test_a_transient_fault_stays_retryable(make_conn, sandbox, tmp_path):
    conn_id = make_conn("ob_ff_transient", max_attempts=1)
    sandbox.inject({"kind": "status", "status": 503, "count": 1, "path": "/api/fdx/5/accounts"})
    with _dag("ob_ff_transient") as dag:
        OpenBankingAccountsOperator(
            task_id="accounts", openbanking_conn_id=conn_id, destination=str(tmp_path), **RETRIES
        )
    result = run_dag(dag, LOGICAL)
    assert result.states == {"accounts": "success"}
    assert result.tries == {"accounts": 2}, "the 503 failed try 1; Airflow's retry landed it"
    assert Path(result.xcoms["accounts"]["paths"][0].removeprefix("file://")).exists()


def test_a_destination_whose_store_cannot_be_opened_is_not_retryable(tmp_path):
    """An unknown scheme (a provider not installed, a typo): no retry fixes that either."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_openbanking.exceptions import LandingDestinationError
    from airflow_provider_openbanking.landing import check_destination_writable

    with pytest.raises(LandingDestinationError) as err:
        check_destination_writable("nosuchfs://bucket/openbanking")
    assert isinstance(err.value, AirflowFailException)
    assert str(err.value).startswith(
        "The landing destination nosuchfs://bucket/openbanking cannot be written: could not open it ("
    )
    # a writable one is proven and left as it was: no probe object, no directory created
    target = tmp_path / "new" / "landing"
    assert str(check_destination_writable(str(target))) == f"file://{target}"
    assert not (tmp_path / "new").exists()
