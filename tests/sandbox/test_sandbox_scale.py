"""A 1,000,000-transaction account is served lazily: a few pages cost little time and no memory."""

from __future__ import annotations

import time

import pytest


def test_million_transaction_account_is_lazy(api, sandbox):
    psutil = pytest.importorskip("psutil")
    process = psutil.Process(sandbox.pid)
    account = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    token = api.customer_token()
    rss_before = process.memory_info().rss
    sandbox.configure(account_transactions={account: 1_000_000})
    path = f"/accounts/{account}/transactions"

    first = api.fdx(path, token, params={"limit": 1000}).json()
    total = first["page"]["totalElements"]
    assert 1_000_000 < total < 1_010_000  # the span's million plus the pending tail
    second = api.fdx(path, token, params={"limit": 1000, "offset": first["page"]["nextOffset"]}).json()
    ids = [api.unwrap(t)[1]["transactionId"] for t in first["transactions"] + second["transactions"]]
    assert len(set(ids)) == 2000

    # one day in the middle of the span maps to an index range (~11k transactions)
    day = {"startTime": "2026-10-01", "endTime": "2026-10-01", "limit": 500}
    page = api.fdx(path, token, params=day).json()
    assert 10_000 < page["page"]["totalElements"] < 12_500
    served = 0
    started = time.perf_counter()
    for _ in range(10):
        served += len(page["transactions"])
        assert all(api.unwrap(t)[1]["postedTimestamp"].startswith("2026-10-01") for t in page["transactions"])
        page = api.fdx(path, token, params={**day, "offset": page["page"]["nextOffset"]}).json()
    rate = served / (time.perf_counter() - started)
    assert rate > 5_000, f"{rate:.0f} transactions/s"

    rss_after = process.memory_info().rss
    assert rss_after - rss_before < 40 * 2**20, (rss_before, rss_after)
    assert sandbox.counters()["requests"]["GET /api/fdx/5/accounts/{accountId}/transactions"] == 13
