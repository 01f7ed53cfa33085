"""Faults that retrying cannot fix, over the main DAG: the run fails cleanly, nothing half-written.

- A server whose pagination loops (``nextOffset`` = the offset just asked for) on every attempt:
  the account stops at the second page each try and lands nothing; its shard's task fails after
  its retries. An account whose pagination loops only once lands in full at the shard's retry
  (which redoes only what did not land).
- A proxy answering an HTML error page on every attempt: the hook gives up after its retries with
  a message that says a proxy answered; the task fails after its Airflow retries.

Every other account lands and loads exactly as in the fault-free run.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import log_text, only, only_files, run_main

pytestmark = pytest.mark.faults


def test_unfixable_faults_fail_their_account_only(fsb, consent, main_dag, env, baseline, capfd, caplog):
    a = [acc["accountId"] for acc in fsb.truth_accounts("cust-0001")]
    b = [acc["accountId"] for acc in fsb.truth_accounts("cust-0002")]
    conns = [consent("ob_a"), consent("ob_b", max_attempts=2)]
    fsb.inject(
        {"kind": "repeat_offset", "count": 99, "path": f"/accounts/{a[0]}/transactions"},
        {"kind": "repeat_offset", "count": 1, "path": f"/accounts/{a[1]}/transactions"},
        {"kind": "html", "status": 502, "count": 99, "path": f"/accounts/{b[0]}/transactions"},
    )

    outcome = run_main(main_dag, env, conns)

    assert outcome.failed
    landed = outcome.transactions("success")
    accounts = {f"ob_a {x}" for x in a} | {f"ob_b {x}" for x in b}
    assert set(landed) == accounts - {f"ob_a {a[0]}", f"ob_b {b[0]}"}, landed
    for conn_id in conns:  # one shard per connection: failed after 1 + 3 retries
        assert outcome.state_of("land_transactions", f"{conn_id} *") == "failed", conn_id
        assert outcome.tries_of("land_transactions", f"{conn_id} *") == 4, conn_id
    assert outcome.state_of("load_transactions") == "success"
    assert outcome.state_of("all_consents_ok") == "upstream_failed"

    lost = {a[0], b[0]}
    assert outcome.table == [row for row in only(conns, baseline.table) if row[1] not in lost]
    assert outcome.files == {
        path: data
        for path, data in only_files(conns, baseline.files).items()
        if not any(f"account_id={acc}" in path for acc in lost)
    }

    log = log_text(capfd, caplog)
    assert f"GET /api/fdx/5/accounts/{a[0]}/transactions: the server returned the same next page" in log
    assert "stopping instead of looping forever" in log
    assert f"GET /api/fdx/5/accounts/{b[0]}/transactions failed, HTTP 502" in log
    assert "non-JSON error body (text/html): a proxy or gateway may have answered" in log
