"""Operators in a real DAG (``dag.test()``) against a strict FDX 5.3 server (the sandbox with knob
``strict_fdx53``: holdings only on ``/accounts/{accountId}``, ``accountIds`` and dates ignored):
what lands is exactly what was asked for (issue 16)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_openbanking.landing import read_jsonl
from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountsOperator,
    OpenBankingHoldingsOperator,
    OpenBankingStatementsOperator,
    OpenBankingTransactionsOperator,
)
from tests.operators.dagrun_helpers import UTC, run_dag

CUSTOMER = "cust-0001"
LOGICAL = dt.datetime(2026, 11, 20, tzinfo=UTC)  # the daily run covering [11-19, 11-20)


def test_operators_land_exactly_the_request_from_a_strict_fdx53_server(
    openbanking_conn, sandbox, tmp_path: Path
):
    truth = sandbox.truth_accounts(CUSTOMER)
    ids = [a["accountId"] for a in truth]
    investment = [a for a in truth if a["accountCategory"] == "INVESTMENT_ACCOUNT"]
    sandbox.configure(strict_fdx53=True)
    dest = str(tmp_path / "landing")

    with DAG(
        "ob_strict_fdx53",
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=dt.datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
    ) as dag:
        OpenBankingAccountsOperator(task_id="accounts", account_ids=ids[1:3], destination=dest)
        OpenBankingTransactionsOperator(task_id="transactions", account_ids=ids[:2], destination=dest)
        OpenBankingStatementsOperator(
            task_id="statements",
            account_ids=ids[:1],
            start_time="2026-10-01",
            end_time="2026-11-01",
            destination=dest,
        )
        OpenBankingHoldingsOperator(task_id="holdings", destination=dest)

    result = run_dag(dag, LOGICAL)
    assert set(result.states.values()) == {"success"}, result.states
    x = result.xcoms

    # accounts: the server listed all six; only the two asked for landed
    accounts = read_jsonl(x["accounts"]["paths"][0])
    assert [a["accountId"] for a in accounts] == ids[1:3]
    assert x["accounts"]["records"] == 2
    # what the server sent unasked is reported, not landed
    assert x["accounts"]["dropped"] == len(ids) - 2 == x["accounts"]["counts"]["dropped"]

    # transactions: the server sent each account's whole history; the window's landing holds
    # exactly the window [2026-11-05, 2026-11-19] (the 14-day lookback included)
    tx = x["transactions"]
    assert (tx["query_start"], tx["query_end"]) == ("2026-11-05", "2026-11-19")
    total = dropped = 0
    assert sorted(tx["accounts"]) == sorted(ids[:2])
    for account_id in ids[:2]:
        expected = sandbox.truth_transactions(account_id, "2026-11-05", "2026-11-19")
        landed = read_jsonl(tx["accounts"][account_id]["path"])
        assert [{k: v for k, v in t.items() if k != "accountCategory"} for t in landed] == expected
        outside = len(sandbox.truth_transactions(account_id)) - len(expected)
        assert outside > 0 and tx["accounts"][account_id]["dropped"] == outside
        total += len(expected)
        dropped += outside
    assert tx["records"] == total
    assert tx["dropped"] == dropped == tx["counts"]["dropped"]

    # statements: only October's, and only its file was downloaded
    st = x["statements"]
    listed = [s for p in st["paths"] for s in read_jsonl(p)]
    assert [s["statementDate"] for s in listed] == ["2026-10-31"]
    assert st["dropped"] == 2  # August's and September's, sent anyway
    assert len(st["files"]) == 1 and st["files"][0].endswith(f"/{listed[0]['statementId']}.pdf")

    # holdings: read from /accounts/{accountId}, every one of them
    holdings = read_jsonl(x["holdings"]["paths"][0])
    expected_holdings = [{"accountId": a["accountId"], **h} for a in investment for h in a["holdings"]]
    assert len(holdings) == len(expected_holdings) > 0
    assert [h["symbol"] for h in holdings] == [h["symbol"] for h in expected_holdings]
    assert sandbox.counters()["requests"]["GET /api/fdx/5/accounts/{accountId}"] == len(investment)
