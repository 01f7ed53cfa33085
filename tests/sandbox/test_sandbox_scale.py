"""A 1,000,000-transaction account is served lazily: a few pages cost little time and no memory."""

from __future__ import annotations

import time

import pytest
import requests

from airflow_provider_openbanking.sandbox.testing import SandboxServer


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


def test_tens_of_thousands_of_customers_with_one_bulk_consent_call():
    """20,000 customers start in seconds (data is built per customer on first use), one admin call
    issues a consent for each, and any of them reads its own accounts."""
    psutil = pytest.importorskip("psutil")
    started = time.perf_counter()
    with SandboxServer(customers=20_000, accounts_per_customer=5, transactions_per_account=20) as server:
        startup = time.perf_counter() - started
        assert startup < 20, f"startup took {startup:.1f} s"
        consents = server.grant_consents()
        assert len(consents) == 20_000
        assert [c["consent_id"] for c in consents[:3]] == ["cust-0001", "cust-0002", "cust-0003"]
        assert consents[-1] == {**consents[-1], "consent_id": "cust-20000", "customer_id": "cust-20000"}
        assert len({c["refresh_token"] for c in consents}) == 20_000

        http = requests.Session()
        http.trust_env = False
        refreshed = http.post(
            f"{server.url}/api/v1/token",
            json={
                "grant_type": "refresh_token",
                "refresh_token": consents[-1]["refresh_token"],
                "client_id": "demo-client",
                "client_secret": "demo-secret",
            },
            timeout=30,
        )
        assert refreshed.status_code == 200, refreshed.text
        accounts = http.get(
            f"{server.url}/api/fdx/5/accounts",
            headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"},
            timeout=30,
        ).json()["accounts"]
        truth = [a["accountId"] for a in server.truth_accounts("cust-20000")]
        assert [next(iter(a.values()))["accountId"] for a in accounts] == truth and len(truth) == 5
        http.close()

        tail = server.customers(offset=19_998)
        assert [c["customerId"] for c in tail] == ["cust-19999", "cust-20000"]
        assert [a["accountId"] for a in tail[1]["accounts"]] == truth
        assert len(server.customers(offset=100, limit=3)) == 3

        first = server.grant_consents(count=2, scopes=["ACCOUNT_BASIC"])
        assert [c["customer_id"] for c in first] == ["cust-0001", "cust-0002"]
        listed = {c["consent_id"]: c for c in server.consents()}
        assert listed["cust-0001"]["scopes"] != ["ACCOUNT_BASIC"]  # the first bulk call's consent
        assert sum(c["customer_id"] == "cust-0001" for c in listed.values()) == 2
        with pytest.raises(RuntimeError, match=r"HTTP 400.*more than the 20000 customers"):
            server.grant_consents(count=20_001)
        rss = psutil.Process(server.pid).memory_info().rss
        assert rss < 250 * 2**20, f"{rss / 2**20:.0f} MB"


def test_rate_limit_per_client_answers_429_1207_with_retry_after(api, sandbox):
    token = api.customer_token("cust-0001")
    sandbox.register_client("other-client", "other-secret", ["http://127.0.0.1:9/cb"])
    other = sandbox.grant_consent("cust-0002", client_id="other-client")
    other_token = api.token(
        grant_type="refresh_token",
        refresh_token=other,
        client_id="other-client",
        client_secret="other-secret",
    ).json()["access_token"]
    sandbox.configure(rate_limit_rps=4, rate_limit_burst=2)
    assert [api.fdx("/accounts", token).status_code for _ in range(2)] == [200, 200]
    limited = api.fdx("/accounts", token)
    assert limited.status_code == 429
    assert limited.json()["code"] == "1207" and limited.headers["Retry-After"] == "1"
    assert limited.headers["ob-correlation-id"]
    # the token endpoint (body credentials) draws on the same client's bucket
    refused = api.token(grant_type="client_credentials")
    assert refused.status_code == 429 and refused.json()["code"] == "1207"
    # another client has a bucket of its own
    assert api.fdx("/accounts", other_token).status_code == 200
    time.sleep(0.3)  # 4 requests/s: one token back after 0.25 s
    assert api.fdx("/accounts", token).status_code == 200
    counters = sandbox.counters()
    assert counters["rate_limited"] == 2 and counters["rate_limited_by_client"] == {"demo-client": 2}
    assert counters["status"]["429"] == 2
    sandbox.configure(rate_limit_rps=0)
    assert all(api.fdx("/accounts", token).status_code == 200 for _ in range(5))


def test_rate_limit_holds_the_rate_over_a_second(api, sandbox):
    token = api.customer_token("cust-0001")
    sandbox.configure(rate_limit_rps=20, rate_limit_burst=5)
    started = time.monotonic()
    ok = 0
    while time.monotonic() - started < 1.0:
        ok += api.fdx("/customers/current", token).status_code == 200
    # at most the burst plus one second's worth (and the limit lets that many through)
    assert 20 <= ok <= 5 + 20 + 1, ok
