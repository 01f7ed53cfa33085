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


def test_consents_lost_mid_run_fail_alone_without_retry(fsb, consent, main_dag, env, baseline, capfd, caplog):
    """Four connections, one consent each, so one shard each. ob_d's consent is dead before the run
    (no sensor waits for it: its shard's first call, the refresh grant, finds it); ob_a's and
    ob_b's are lost while their transactions land. The others are untouched, nothing is retried."""
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
    index = {c: conns.index(c) for c in conns}
    for conn_id, state in {"ob_a": "success", "ob_b": "success", "ob_c": "success", "ob_d": "failed"}.items():
        assert outcome.states[("shard.land_accounts", index[conn_id])] == state, conn_id
    for conn_id, state in {"ob_a": "failed", "ob_b": "failed", "ob_c": "success", "ob_d": "failed"}.items():
        key = ("shard.land_transactions", index[conn_id])
        assert outcome.states[key] == state, conn_id
        assert outcome.tries[key] == 1, f"{conn_id} was retried"
    assert outcome.tries[("shard.land_accounts", index["ob_d"])] == 1
    assert outcome.state_of("load_transactions") == "success"
    assert outcome.state_of("all_consents_ok") == "upstream_failed"

    # The healthy consent is untouched; the lost ones keep only what landed before the loss.
    assert only(["ob_c"], outcome.table) == only(["ob_c"], baseline.table)
    assert set(only(["ob_a", "ob_b"], outcome.table)) <= set(baseline.table)
    assert only_files(["ob_c"], outcome.files) == only_files(["ob_c"], baseline.files)
    lost = only_files(["ob_a", "ob_b"], outcome.files)
    assert lost and all(baseline.files.get(k) == v for k, v in lost.items())
    assert {k for k in lost if k.startswith("accounts/")} == {
        k for k in only_files(["ob_a", "ob_b"], baseline.files) if k.startswith("accounts/")
    }
    assert not only_files(["ob_d"], outcome.files)
    assert not [k for k in only_files(["ob_b"], outcome.files) if k.startswith("transactions/")]

    log = log_text(capfd, caplog)
    assert "1 of 1 consent(s) of connection 'ob_a' failed (default: 602" in log and "code 602" in log
    assert "1 of 1 consent(s) of connection 'ob_b' failed (default: refresh_rejected" in log
    assert "the refresh token was rejected" in log
    assert "1 of 1 consent(s) of connection 'ob_d' failed (default: refresh_rejected" in log
    assert "need the customer to authorize again" in log
    assert "airflow-openbanking authorize --conn-id ob_d" in log
