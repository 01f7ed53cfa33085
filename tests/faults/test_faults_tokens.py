"""Token faults over the main DAG: 2-second access tokens, refresh-token rotation under load.

- Access tokens live 2 s, so they expire in the middle of paginations, and the server also kills
  one behind the client's back at a later page of one account of every consent: the hook
  refreshes ahead of expiry or on the 401 and replays the page; nothing is lost or duplicated.
  (The kills are tied to requests, not to a clock: an earlier version killed tokens older than
  1.5 s every 1.6 s, and on a loaded CI machine a replay's fresh token sometimes died as well.)
- The refresh token rotates on every use (no grace period) and one shard task lands the consent's
  8 accounts on 8 threads: they share the access token (and the accounts task's, through the
  consent store: one refresh grant per consent per token lifetime), never race on the rotating
  refresh token, and the run ends exactly like a run without rotation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache
from airflow_provider_openbanking.sandbox.testing import SandboxServer
from tests.faults.harness import (
    CONSENTS,
    SANDBOX_OPTIONS,
    failure_report,
    log_text,
    make_consents,
    only,
    only_files,
    reset_sandbox,
    run_main,
    use_env,
)

pytestmark = pytest.mark.faults

CONNS = ["ob_a", "ob_b"]


def test_two_second_access_tokens_expiring_mid_pagination(
    fsb, consent, main_dag, env, baseline, capfd, caplog
):
    fsb.configure(access_token_ttl=2, latency_ms=30)
    conns = [consent(c) for c in CONNS]
    # One token dies at a later page of the first account of every consent, whatever the timing.
    killed = [fsb.truth_accounts(CONSENTS[c])[0]["accountId"] for c in CONNS]
    for account_id in killed:
        fsb.inject(
            {"kind": "expire_token", "path": f"/accounts/{account_id}/transactions", "with_offset": True}
        )

    outcome = run_main(main_dag, env, conns)

    log = log_text(capfd, caplog)
    assert outcome.ok, failure_report(outcome, log)
    assert set(outcome.tries.values()) == {1}
    assert outcome.table == only(CONNS, baseline.table)
    assert outcome.files == only_files(CONNS, baseline.files)
    counters = fsb.counters()
    assert counters["faults_injected"] == len(killed)
    assert counters["status"].get("401", 0) >= len(killed), "the killed tokens' pages were replayed"
    # One grant per consent to start, then at least one more after a dead token was replayed (the
    # consent store shares access tokens between tasks, and 2 s tokens expire during the run, so
    # how many more depends on timing).
    assert counters["token_grants"]["refresh_token"] > len(conns)
    assert counters["invalid_grant"] == 0
    assert "access token refused (HTTP 401); refreshed it and replaying" in log


@pytest.fixture(scope="module")
def eight_accounts() -> Iterator[SandboxServer]:
    """One customer with 8 accounts: one shard task landing 8 accounts on 8 threads."""
    with SandboxServer(**{**SANDBOX_OPTIONS, "customers": 1, "accounts_per_customer": 8}) as server:
        yield server


def test_rotating_refresh_token_with_eight_threads_at_once(eight_accounts, main_dag, tmp_path, monkeypatch):
    """The DAG no longer runs a task per account: one shard task lands the consent's 8 accounts
    on its threads, which share one access token. With a bank that rotates refresh tokens, the
    consent refreshes once, no thread ever presents a stale refresh token, and the store ends
    with the live one. (Races of several processes on one consent are the consent store's
    tests: tests/test_consent*.py.)"""
    sandbox = eight_accounts
    reset_sandbox(sandbox)
    make = make_consents(sandbox, monkeypatch.setenv)
    plain = run_main(main_dag, use_env(monkeypatch.setenv, tmp_path / "plain"), [make("ob_a")])
    assert plain.ok and len(plain.transactions("success")) == 8

    reset_sandbox(sandbox)
    sandbox.configure(rotate_refresh_tokens=True, refresh_grace_seconds=0)
    env = use_env(monkeypatch.setenv, tmp_path / "rotating")
    conn_id = make("ob_a")
    original = json.loads(__import__("os").environ["AIRFLOW_CONN_OB_A"])["extra"]["refresh_token"]

    outcome = run_main(main_dag, env, [conn_id])

    assert outcome.ok, outcome.problems
    assert set(outcome.tries.values()) == {1}
    assert outcome.table == plain.table
    assert outcome.files == plain.files
    counters = sandbox.counters()
    # The accounts task's refresh grant stored the access token in the consent store; the
    # transactions task and its 8 threads share it (or refresh once under the consent's lease):
    # no race on the rotating refresh token, no invalid_grant.
    assert counters["token_grants"]["refresh_token"] <= 2, counters
    assert counters["invalid_grant"] == 0, counters
    # The store ends with a live token: the next run's first refresh works.
    clear_token_cache()
    hook = OpenBankingHook(conn_id)
    assert hook.current_refresh_token() != original
    assert hook.get_access_token()
