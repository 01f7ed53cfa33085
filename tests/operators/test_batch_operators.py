"""Batched operators against the sandbox: many consents of one connection in one task (issue 14).

Consents are onboarded as a user would: ``airflow-openbanking consents import`` of a JSON Lines
file into the connection's consent store. Runs are real ``dag.test()`` runs.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking import cli
from airflow_provider_openbanking.landing import read_jsonl
from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountsOperator,
    OpenBankingTransactionsOperator,
)
from tests.operators.dagrun_helpers import UTC, daily_dag, run_dag

LOGICAL = dt.datetime(2026, 11, 20, tzinfo=UTC)
QUERY = ("2026-11-16", "2026-11-19")  # [interval start - 3 days lookback, last day]
TXN_REQUESTS = "GET /api/fdx/5/accounts/{accountId}/transactions"


def import_consents(conn_id: str, tokens: dict[str, str], tmp_path: Path) -> None:
    """``airflow-openbanking consents import --conn-id C FILE``, in-process."""
    path = tmp_path / f"{conn_id}-consents.jsonl"
    path.write_text(
        "".join(json.dumps({"consent_id": c, "refresh_token": t}) + "\n" for c, t in tokens.items())
    )
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["consents", "import", "--conn-id", conn_id, str(path)], stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    assert not any(t in out.getvalue() + err.getvalue() for t in tokens.values())


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def scene(sandbox: Any, make_conn: Any, tmp_path: Path) -> dict[str, Any]:
    """One connection, eight consents: four healthy (two customers), one whose customer's accounts
    answer 704 for one account, one whose account answers 503 (six times: one task try's retry
    budget), one revoked at the bank (602), one whose refresh token is refused."""
    conn_id = make_conn("ob_batch", customer_id="cust-0001", max_attempts=6)
    tokens = {
        "ok-1": sandbox.grant_consent("cust-0001"),
        "ok-2": sandbox.grant_consent("cust-0001"),
        "ok-3": sandbox.grant_consent("cust-0001"),
        "ok-4": sandbox.grant_consent("cust-0001"),
        "with-704": sandbox.grant_consent("cust-0002"),
        "flaky-5xx": sandbox.grant_consent("cust-0003"),
        "revoked": sandbox.grant_consent("cust-0001"),
        "refused": sandbox.grant_consent("cust-0001"),
    }
    import_consents(conn_id, tokens, tmp_path)
    sandbox.revoke_consent(refresh_token=tokens["revoked"], at_bank=True)
    sandbox.revoke_consent(refresh_token=tokens["refused"])
    accounts = {
        c: [a["accountId"] for a in sandbox.truth_accounts(c)]
        for c in ("cust-0001", "cust-0002", "cust-0003")
    }
    unsupported, broken = accounts["cust-0002"][1], accounts["cust-0003"][2]
    sandbox.inject(
        {"kind": "status", "status": 400, "code": "704", "path": f"/{unsupported}/transactions", "count": 99},
        {"kind": "status", "status": 503, "path": f"/{broken}/transactions", "count": 6},
    )
    customer = {
        c: ("cust-0002" if c == "with-704" else "cust-0003" if c == "flaky-5xx" else "cust-0001")
        for c in tokens
    }
    return {
        "conn_id": conn_id,
        "consents": sorted(tokens),
        "customer": customer,
        "accounts": accounts,
        "unsupported": unsupported,
        "broken": broken,
    }


def landed_ids(dest: Path, conn_id: str, consent_id: str, account_id: str) -> list[str] | None:
    files = list(
        dest.glob(
            f"transactions/conn_id={conn_id}/consent_id={consent_id}/interval=*/account_id={account_id}.jsonl.gz"
        )
    )
    if not files:
        return None
    (path,) = files
    return sorted(r["transactionId"] for r in read_jsonl(f"file://{path}"))


def test_one_bad_consent_of_each_kind_and_the_healthy_ones_land_in_full(
    scene: dict[str, Any], sandbox: Any, dest: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    conn_id = scene["conn_id"]
    with daily_dag("ob_batch_isolation") as dag:
        OpenBankingTransactionsOperator(
            task_id="transactions",
            openbanking_conn_id=conn_id,
            consent_ids=scene["consents"],
            lookback=3,
            max_workers=4,
            destination=str(dest),
            retries=0,
        )
    result = run_dag(dag, LOGICAL)
    out = capfd.readouterr().out
    assert result.states == {"transactions": "failed"}

    # Every healthy consent landed every account in full, as the bank has it.
    for consent in ("ok-1", "ok-2", "ok-3", "ok-4", "with-704"):
        for account in scene["accounts"][scene["customer"][consent]]:
            if account == scene["unsupported"]:
                assert landed_ids(dest, conn_id, consent, account) is None
                continue
            truth = sorted(t["transactionId"] for t in sandbox.truth_transactions(account, *QUERY))
            assert landed_ids(dest, conn_id, consent, account) == truth, (consent, account)
    # The 5xx consent landed its other accounts; the broken one has no file (never half a file).
    flaky = scene["accounts"]["cust-0003"]
    assert landed_ids(dest, conn_id, "flaky-5xx", scene["broken"]) is None
    assert all(landed_ids(dest, conn_id, "flaky-5xx", a) is not None for a in flaky if a != scene["broken"])
    # The dead consents landed nothing.
    assert not list(dest.glob("transactions/*/consent_id=revoked")) and not list(
        dest.glob("transactions/*/consent_id=refused")
    )

    # One message, after everything else landed, naming each failed consent and why.
    assert "3 of 8 consent(s) of connection 'ob_batch' failed" in out
    assert "flaky-5xx: transient_503 (1 account(s))" in out
    assert "revoked: 602" in out and "refused: refresh_rejected" in out
    assert "The other 5 consent(s) landed in full" in out
    assert f"skipping account {scene['unsupported']} (704" in out

    # The consent store knows how each consent fared (record_success / record_error).
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    store = OpenBankingHook(conn_id).consent_store
    records = store.load_many(conn_id, scene["consents"])
    assert records["ok-1"].last_success_at and records["with-704"].last_success_at
    assert records["flaky-5xx"].last_error == "transient_503"
    assert records["revoked"].last_error == "602"
    # At most one refresh grant per consent (the dead one's refused grant included).
    assert sandbox.counters()["token_grants"]["refresh_token"] <= len(scene["consents"])


def test_a_retry_redoes_only_the_consents_that_did_not_land(
    scene: dict[str, Any], sandbox: Any, dest: Path
) -> None:
    conn_id = scene["conn_id"]
    with daily_dag("ob_batch_resume") as dag:
        OpenBankingTransactionsOperator(
            task_id="transactions",
            openbanking_conn_id=conn_id,
            shard_index=0,
            shard_count=1,  # every consent of the connection: its default one and the eight imported
            lookback=3,
            max_workers=4,
            destination=str(dest),
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
        )
    result = run_dag(dag, LOGICAL)
    # Try 1 fails (the 503s outlast its retry budget: retryable), try 2 lands the flaky account and
    # fails without a further retry: only the revoked and refused consents are left, for good.
    assert result.states == {"transactions": "failed"} and result.tries["transactions"] == 2
    truth = sorted(t["transactionId"] for t in sandbox.truth_transactions(scene["broken"], *QUERY))
    assert landed_ids(dest, conn_id, "flaky-5xx", scene["broken"]) == truth

    manifest = next(dest.glob("_manifests/transactions/conn_id=ob_batch/interval=*/shard=0000-of-0001.jsonl"))
    entries = read_jsonl(f"file://{manifest}")
    consents = {e["consent_id"] for e in entries}
    assert consents == {"default", "ok-1", "ok-2", "ok-3", "ok-4", "with-704", "flaky-5xx"}
    # Every account's transactions were fetched exactly once: try 2 did not fetch again what try 1
    # landed (beside the pages: the 6 refused attempts of the broken account, the 704 answer).
    pages = sum(e["pages"] for e in entries)
    assert sandbox.counters()["requests"][TXN_REQUESTS] == pages + 6 + 1, sandbox.counters()["requests"]
    # Try 2 listed the accounts of the consent it redid only; the dead ones were not retried.
    listed = sandbox.counters()["requests"]["GET /api/fdx/5/accounts"]
    assert listed == 8 + 1, listed  # try 1: 7 live consents + the 602 one; try 2: the flaky one


def test_one_consent_by_default_and_a_bounded_summary_for_a_batch(
    scene: dict[str, Any], sandbox: Any, dest: Path
) -> None:
    conn_id = scene["conn_id"]
    sandbox.clear_faults()
    healthy = ["ok-1", "ok-2", "ok-3", "ok-4", "with-704"]
    with daily_dag("ob_batch_summary") as dag:
        OpenBankingAccountsOperator(task_id="default", openbanking_conn_id=conn_id, destination=str(dest))
        OpenBankingAccountsOperator(
            task_id="batch", openbanking_conn_id=conn_id, consent_ids=healthy, destination=str(dest)
        )
    result = run_dag(dag, LOGICAL)
    assert result.states == {"default": "success", "batch": "success"}
    single, batch = result.xcoms["default"], result.xcoms["batch"]
    assert single["consent_id"] == "default" and len(single["paths"]) == 1
    assert "/consent_id=default/" in single["paths"][0]
    assert batch["consents"] == {"selected": 5, "landed": 5, "resumed": 0, "failed": 0}
    assert batch["counts"]["files"] == 5 and batch["failed"] == {}
    assert "paths" not in batch and batch["manifest"].endswith(".jsonl")
    assert len(json.dumps(batch)) < 2000
