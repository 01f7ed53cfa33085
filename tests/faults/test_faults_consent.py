"""Consents lost during a run of the main DAG: only that consent's tasks fail, the others finish.

One run, four consents:

- ``ob_a`` is revoked mid-run (after its accounts landed): its transactions calls answer 602 and
  its tasks fail at once, without retry;
- ``ob_b`` is revoked mid-run and its access token dies with it: the refresh token is rejected
  when the hook refreshes, and its tasks fail at once, without retry;
- ``ob_d`` holds a refresh token rejected from the start: the consent sensor waits for the
  customer to re-authorize and, at its timeout, fails saying so;
- ``ob_c`` is healthy: it lands and loads exactly what the fault-free run did.

Nothing of ``ob_a``/``ob_b``'s transactions is half-written: no file, no temporary file, no row.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import env_conn, log_text, only, only_files, run_main, watch

pytestmark = pytest.mark.faults


def test_consents_lost_mid_run_fail_alone_without_retry(
    fsb, consent, main_dag, env, baseline, monkeypatch, capfd, caplog
):
    sensor = main_dag.get_task("consent.wait_for_consent")
    monkeypatch.setattr(sensor, "timeout", 2.0)
    monkeypatch.setattr(sensor, "poke_interval", 0.5)
    conns = [consent("ob_a"), consent("ob_b"), consent("ob_c"), consent("ob_d", "cust-0001")]
    token = {c: env_conn(c)["extra"]["refresh_token"] for c in conns}
    fsb.revoke_consent(refresh_token=token["ob_d"])
    # The first transactions request of the run waits 1 s (429): the moment to pull the consents.
    fsb.inject({"kind": "status", "status": 429, "retry_after": 1, "path": "/transactions"})

    def lose_consents() -> None:
        fsb.revoke_consent(refresh_token=token["ob_a"])
        fsb.revoke_consent(refresh_token=token["ob_b"])
        fsb.expire_access_tokens(customer_id="cust-0002")

    with watch(lambda: fsb.counters()["faults_injected"] >= 1, lose_consents):
        outcome = run_main(main_dag, env, conns)

    assert outcome.failed
    for conn_id, state in {"ob_a": "success", "ob_b": "success", "ob_c": "success", "ob_d": None}.items():
        index = conns.index(conn_id)
        assert outcome.states[("consent.land_accounts", index)] == (state or "upstream_failed")
    assert outcome.states[("consent.wait_for_consent", 3)] == "failed"
    transactions = outcome.transactions()
    assert len(transactions) == 9
    for label, state in transactions.items():
        expected = "success" if label.startswith("ob_c ") else "failed"
        assert state == expected, (label, state)
        assert outcome.tries_of("land_transactions", label) == 1, f"{label} was retried"
    assert outcome.state_of("load_transactions") == "success"
    assert outcome.state_of("all_consents_ok") == "upstream_failed"

    # The healthy consent is untouched; the lost ones keep only what landed before the loss.
    assert outcome.table == only(["ob_c"], baseline.table)
    landed_before = {k: v for k, v in baseline.files.items() if k.startswith("accounts/")}
    assert outcome.files == {
        **only_files(["ob_a", "ob_b"], landed_before),
        **only_files(["ob_c"], baseline.files),
    }

    log = log_text(capfd, caplog)
    consent_lost = "the customer's consent for connection '{}' is missing or revoked"
    assert consent_lost.format("ob_a") in log and "code 602" in log
    assert consent_lost.format("ob_b") in log and "the refresh token was rejected" in log
    assert "retrying cannot help" in log
    assert "waiting for a customer access token on connection 'ob_d'" in log
    assert "airflow-openbanking authorize --conn-id ob_d" in log
