"""OpenBankingTokenSensor in poke, reschedule and deferrable modes, inside real DAGs (issue 4)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from airflow.sdk import DAG

from airflow_provider_openbanking.sensors.openbanking import OpenBankingTokenSensor
from airflow_provider_openbanking.triggers.openbanking import OpenBankingTokenTrigger
from tests.operators.dagrun_helpers import UTC, run_dag

LOGICAL = dt.datetime(2026, 11, 20, tzinfo=UTC)
MODES = {
    "poke": {"mode": "poke", "deferrable": False},
    "reschedule": {"mode": "reschedule", "deferrable": False},
    "deferrable": {"mode": "poke", "deferrable": True},
}


def one_off_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=UTC), catchup=False)


@pytest.mark.parametrize("mode", list(MODES))
def test_waits_while_consent_is_revoked_until_it_is_granted_again(mode, make_conn, sandbox, capfd):
    conn_id = make_conn("ob_sensor")
    sandbox.revoke_consent(customer_id="cust-0001")
    granted_at: list[float] = []

    # Deferrable: the sensor checks once before deferring; wait for the trigger to be refused too.
    refusals = 2 if mode == "deferrable" else 1

    def customer_reauthorizes() -> None:
        # Once the sensor has been refused, the customer authorizes again and the new consent's
        # refresh token goes into the connection.
        deadline = time.monotonic() + 60
        while sandbox.counters()["invalid_grant"] < refusals and time.monotonic() < deadline:
            time.sleep(0.1)
        make_conn("ob_sensor")
        granted_at.append(time.monotonic())

    with one_off_dag(f"ob_sensor_regrant_{mode}") as dag:
        OpenBankingTokenSensor(
            task_id="wait", openbanking_conn_id=conn_id, poke_interval=1, timeout=120, **MODES[mode]
        )
    helper = threading.Thread(target=customer_reauthorizes)
    helper.start()
    try:
        result = run_dag(dag, LOGICAL)
    finally:
        helper.join()
    out = capfd.readouterr().out
    assert result.states == {"wait": "success"}, out[-3000:]
    xcom = result.xcoms["wait"]
    assert xcom["conn_id"] == conn_id and 200 < xcom["ttl"] <= 300
    assert granted_at, "the sensor finished before the consent was granted again"
    assert "no customer consent: " in out and "the refresh token was rejected" in out
    if mode == "deferrable":
        assert "deferring to the triggerer" in out and "Pausing task as DEFERRED" in out
    if mode == "poke":
        assert "Connection 'ob_sensor': waiting (no customer consent" in out
    if mode == "reschedule":
        assert "marking task as UP_FOR_RESCHEDULE" in out
        assert result.tries["wait"] == 1  # reschedules are not retries


def test_timeouts_fail_clearly_or_skip_and_short_lived_tokens_are_accepted(make_conn, sandbox, capfd):
    no_consent = make_conn("ob_no_consent", refresh_token="")
    consented = make_conn("ob_consented")
    sandbox.configure(access_token_ttl=20)  # the server's tokens live less than min_ttl below
    common = {"openbanking_conn_id": no_consent, "poke_interval": 0.3, "timeout": 1}
    with one_off_dag("ob_sensor_timeouts") as dag:
        OpenBankingTokenSensor(task_id="poke_timeout", **common)
        OpenBankingTokenSensor(task_id="poke_soft", soft_fail=True, **common)
        OpenBankingTokenSensor(task_id="reschedule_timeout", mode="reschedule", **common)
        OpenBankingTokenSensor(task_id="defer_timeout", deferrable=True, **common)
        OpenBankingTokenSensor(task_id="defer_soft", deferrable=True, soft_fail=True, **common)
        OpenBankingTokenSensor(task_id="short_lived", openbanking_conn_id=consented, min_ttl=120, timeout=30)
    result = run_dag(dag, LOGICAL)
    out = capfd.readouterr().out
    assert result.states == {
        "poke_timeout": "failed",
        "poke_soft": "skipped",
        "reschedule_timeout": "failed",
        "defer_timeout": "failed",
        "defer_soft": "skipped",
        "short_lived": "success",
    }
    assert result.tries["poke_timeout"] == 1  # AirflowSensorTimeout: no retries
    assert "Timed out after 1 s waiting for a customer access token on connection 'ob_no_consent'" in out
    assert "The customer must re-authorize" in out
    assert 0 < result.xcoms["short_lived"]["ttl"] <= 20
    assert "less than min_ttl=120 s: accepting a freshly minted token" in out


def test_deferrable_default_and_validation(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    from airflow_provider_openbanking.sensors import openbanking as sensor_module

    assert sensor_module._default_deferrable() is True
    sensor = OpenBankingTokenSensor(task_id="s", deferrable=False)
    assert sensor.deferrable is False and sensor.min_ttl == 60
    assert sensor.template_fields == ("openbanking_conn_id",)
    with pytest.raises(ValueError, match="min_ttl"):
        OpenBankingTokenSensor(task_id="s2", min_ttl=-1)


def test_execute_complete_handles_every_event():
    from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException

    sensor = OpenBankingTokenSensor(task_id="s", openbanking_conn_id="c", timeout=5)
    assert sensor.execute_complete({}, {"status": "success", "ttl": 250.0}) == {"conn_id": "c", "ttl": 250.0}
    with pytest.raises(AirflowSensorTimeout, match="re-authorize"):
        sensor.execute_complete({}, {"status": "timeout", "message": "no customer consent: 602"})
    with pytest.raises(AirflowException, match="bad host"):
        sensor.execute_complete({}, {"status": "error", "message": "bad host"})
    soft = OpenBankingTokenSensor(task_id="s3", openbanking_conn_id="c", soft_fail=True)
    with pytest.raises(AirflowSkipException):
        soft.execute_complete({}, {"status": "timeout"})
    assert isinstance(OpenBankingTokenTrigger("c"), OpenBankingTokenTrigger)
