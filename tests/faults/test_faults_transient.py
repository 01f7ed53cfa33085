"""Transient faults over the main DAG: rate limits, 5xx bursts, broken bodies -- nothing lost.

Each run injects a group of faults that do not interfere (each on its own account, endpoint or
page) and must end exactly like the fault-free run: same warehouse table, same landed files, every
task successful at its first try (the hook's retries absorb the faults), every fault consumed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.harness import log_text, only, only_files, run_main

pytestmark = pytest.mark.faults

CONNS = ["ob_a", "ob_b"]


def _accounts(sandbox: Any) -> tuple[list[str], list[str]]:
    return (
        [a["accountId"] for a in sandbox.truth_accounts("cust-0001")],
        [a["accountId"] for a in sandbox.truth_accounts("cust-0002")],
    )


def _txns(account_id: str) -> str:
    return f"/accounts/{account_id}/transactions"


def rate_limits(a: list[str], b: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    return [
        # the first FDX request of the run is a land_accounts page
        {"kind": "status", "status": 429, "path": "/api/fdx/5/accounts", "count": 1},
        {"kind": "status", "status": 429, "retry_after": 0.5, "path": "/api/v1/token"},
        {"kind": "status", "status": 429, "retry_after": 0.5, "path": _txns(a[0]), "with_offset": True},
        {"kind": "status", "status": 429, "count": 2, "path": _txns(a[1])},
        {"kind": "status", "status": 422, "code": "1207", "retry_after": 0.5, "path": _txns(b[0])},
        {
            "kind": "status",
            "status": 422,
            "code": "1207",
            "count": 2,
            "path": _txns(b[1]),
            "with_offset": True,
        },
    ], ["HTTP 429, code 1207", "HTTP 422, code 1207", "retrying in 0.50s"]


def server_errors(a: list[str], b: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    return [
        {"kind": "status", "status": 500, "path": "/api/v1/token"},
        {"kind": "html", "status": 502, "count": 2, "path": "/api/fdx/5/accounts"},
        {"kind": "status", "status": 500, "count": 3, "path": _txns(a[0]), "with_offset": True},
        {"kind": "status", "status": 503, "count": 3, "path": _txns(a[1])},
        {"kind": "status", "status": 503, "retry_after": 0.5, "path": _txns(b[0]), "with_offset": True},
        {"kind": "html", "status": 504, "count": 2, "path": _txns(b[2]), "with_offset": True},
    ], ["HTTP 500", "HTTP 503", "non-JSON error body (text/html): a proxy or gateway may have answered"]


def broken_bodies(a: list[str], b: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    return [
        {"kind": "malformed", "path": "/api/v1/token"},
        {"kind": "drop", "path": "/api/fdx/5/accounts"},
        {"kind": "drop", "count": 2, "path": _txns(a[0]), "with_offset": True},
        {"kind": "malformed", "count": 2, "path": _txns(a[2]), "with_offset": True},
        {"kind": "drop", "path": _txns(b[1])},
        {"kind": "malformed", "path": _txns(b[2])},
    ], ["connection failed or dropped mid-response", "the body is not valid JSON"]


@pytest.mark.parametrize("group", [rate_limits, server_errors, broken_bodies], ids=lambda g: g.__name__)
def test_transient_faults_leave_no_trace(group, fsb, consent, main_dag, env, baseline, capfd, caplog):
    faults, logged = group(*_accounts(fsb))
    conns = [consent(c) for c in CONNS]
    fsb.inject(*faults)

    outcome = run_main(main_dag, env, conns)

    assert outcome.ok, outcome.problems
    assert set(outcome.tries.values()) == {1}, "the hook's retries absorb transient faults"
    assert fsb.counters()["faults_injected"] == sum(f.get("count", 1) for f in faults)
    assert outcome.table == only(CONNS, baseline.table)
    assert outcome.files == only_files(CONNS, baseline.files)
    log = log_text(capfd, caplog)
    for text in logged:
        assert text in log, text
