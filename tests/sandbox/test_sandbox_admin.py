"""Sandbox admin hooks: faults, counters, config, reset, truth, and the CLI/helper."""

from __future__ import annotations

import json

import pytest
import requests

from airflow_provider_openbanking.sandbox.testing import SandboxServer


@pytest.fixture
def token(api):
    return api.customer_token("cust-0001")


def test_status_fault_with_code_retry_after_and_count(api, sandbox, token):
    sandbox.inject(
        {"kind": "status", "status": 429, "code": "1207", "retry_after": 2, "count": 2, "path": "/accounts"}
    )
    for _ in range(2):
        r = api.fdx("/accounts", token)
        assert r.status_code == 429 and r.json()["code"] == "1207" and r.headers["Retry-After"] == "2"
        assert r.headers["ob-correlation-id"]
    assert api.fdx("/accounts", token).status_code == 200
    sandbox.inject({"kind": "status", "status": 503})
    r = api.fdx("/customers/current", token)
    assert r.status_code == 503 and r.json()["code"] == "503" and "Retry-After" not in r.headers
    counters = sandbox.counters()
    assert (
        counters["faults_injected"] == 3 and counters["status"]["429"] == 2 and counters["status"]["503"] == 1
    )


def test_faults_match_path_and_method_in_order(api, sandbox, token):
    sandbox.inject(
        {"kind": "status", "status": 500, "path": "/transactions"},
        {"kind": "status", "status": 502, "method": "POST"},
        {"kind": "status", "status": 422},
    )
    assert api.fdx("/accounts", token).status_code == 422  # first two do not match
    assert api.token(grant_type="client_credentials").status_code == 502
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    assert api.fdx(f"/accounts/{acc}/transactions", token).status_code == 500
    assert api.fdx(f"/accounts/{acc}/transactions", token).status_code == 200
    # admin paths are never faulted
    sandbox.inject({"kind": "status", "status": 500, "count": 5})
    assert sandbox.counters()["faults_injected"] == 3
    sandbox.clear_faults()
    assert api.fdx("/accounts", token).status_code == 200


def test_drop_fault_breaks_the_connection(api, sandbox, token):
    sandbox.inject({"kind": "drop", "path": "/accounts"})
    with pytest.raises(requests.exceptions.RequestException) as err:
        api.fdx("/accounts", token)
    assert isinstance(
        err.value, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    )
    assert api.fdx("/accounts", token).status_code == 200
    assert "without completing" not in sandbox.output


def test_malformed_and_html_faults(api, sandbox, token):
    sandbox.inject({"kind": "malformed"}, {"kind": "html"}, {"kind": "html", "status": 504})
    r = api.fdx("/accounts", token)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    r = api.fdx("/accounts", token)
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html") and "nginx" in r.text
    assert api.fdx("/accounts", token).status_code == 504


def test_repeat_offset_fault_makes_a_loop(api, sandbox, token):
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    sandbox.inject({"kind": "repeat_offset", "path": "/transactions"})
    first = api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 50}).json()
    nxt = first["page"]["nextOffset"]  # the first page has no offset: not faulted
    second = api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 50, "offset": nxt}).json()
    assert second["page"]["nextOffset"] == nxt and f"offset={nxt}" in second["links"]["next"]["href"]
    assert sandbox.counters()["faults_injected"] == 1
    third = api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 50, "offset": nxt}).json()
    assert third["page"]["nextOffset"] != nxt


def test_expire_token_fault_kills_the_presented_token(api, sandbox, token):
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    sandbox.inject({"kind": "expire_token", "path": "/transactions", "with_offset": True})
    first = api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 5})
    assert first.status_code == 200  # no offset: not faulted
    nxt = first.json()["page"]["nextOffset"]
    assert (
        api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 5, "offset": nxt}).status_code == 401
    )
    assert api.fdx("/accounts", token).status_code == 401  # the token stays dead
    assert api.fdx("/accounts", api.customer_token("cust-0001")).status_code == 200
    assert sandbox.counters()["faults_injected"] == 1


def test_bad_fault_and_config_specs_are_400(sandbox):
    for bad in (
        {"kind": "explode"},
        {"kind": "status"},
        {"kind": "status", "status": 200},
        {"kind": "drop", "x": 1},
    ):
        r = requests.post(f"{sandbox.url}/_admin/faults", json=bad, timeout=10)
        assert r.status_code == 400, bad
    bad_knobs: list[dict[str, object]] = [{"no_such_knob": 1}, {"consent_mode": "maybe"}, {"page_size": 0}]
    bad_knobs.append({"now": "yesterday"})
    for knobs in bad_knobs:
        r = requests.post(f"{sandbox.url}/_admin/config", json=knobs, timeout=10)
        assert r.status_code == 400 and r.json()["error"], knobs


def test_counters_by_route_template(api, sandbox, token):
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    for _ in range(3):
        api.fdx(f"/accounts/{acc}/transactions", token)
    api.fdx("/accounts/nope", token)
    c = sandbox.counters()
    assert c["requests"]["GET /api/fdx/5/accounts/{accountId}/transactions"] == 3
    assert c["requests"]["GET /api/fdx/5/accounts/{accountId}"] == 1
    assert c["requests"]["POST /api/v1/token"] == 1  # customer_token() refreshed once
    assert c["token_grants"] == {"client_credentials": 0, "authorization_code": 0, "refresh_token": 1}
    assert c["status"] == {"200": 4, "404": 1} and c["invalid_grant"] == 0 and c["faults_injected"] == 0
    assert not any(k.startswith(("GET /_admin", "POST /_admin")) for k in c["requests"])


def test_config_and_reset(api, sandbox, token):
    cfg = sandbox.configure(latency_ms=5, now="2026-11-22", page_size=7)
    assert cfg["now"] == "2026-11-22T23:59:59Z" and cfg["page_size"] == 7 and cfg["latency_ms"] == 5
    assert sandbox.config()["now"] == "2026-11-22T23:59:59Z"
    sandbox.inject({"kind": "status", "status": 500, "path": "/nothing-matches"})
    sandbox.reset()
    cfg = sandbox.config()
    assert cfg["now"] == "2026-11-20T23:59:59Z" and cfg["page_size"] == 100 and cfg["latency_ms"] == 0
    assert cfg["consent_mode"] == "approve" and cfg["rotate_refresh_tokens"] is False
    assert cfg["access_token_ttl"] == 300 and cfg["refresh_grace_seconds"] == 10 and cfg["code_ttl"] == 60
    assert sandbox.counters()["faults_injected"] == 0
    assert requests.get(f"{sandbox.url}/_admin/faults", timeout=10).json() == {"faults": []}
    r = api.fdx("/accounts", token)  # tokens were cleared
    assert r.status_code == 401 and r.json()["code"] == "401"


def test_truth_is_fdx6_shaped(sandbox):
    accounts = sandbox.truth_accounts("cust-0002")
    assert len(accounts) == 6 and all("accountCategory" in a and "accountNumber" in a for a in accounts)
    assert not any(k.endswith("Account") for a in accounts for k in a)  # no wrappers
    assert (
        requests.get(f"{sandbox.url}/_admin/truth/accounts?customer_id=cust-9999", timeout=10).status_code
        == 404
    )
    txs = sandbox.truth_transactions(accounts[0]["accountId"], "2026-11-01", "2026-11-02")
    assert txs and all(t["accountId"] == accounts[0]["accountId"] for t in txs)


def test_helper_reports_a_server_that_cannot_start():
    with pytest.raises(RuntimeError, match="exited with code 2"):
        SandboxServer(customers=0).start(timeout=20)
