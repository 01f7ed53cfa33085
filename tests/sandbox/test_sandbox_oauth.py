"""Sandbox OAuth: token grants, authorize (approve/deny/prompt), codes, refresh rotation, revoke."""

from __future__ import annotations

import base64
import re
import threading
from urllib.parse import parse_qs, urlparse

import pytest


def _callback(resp):
    assert resp.status_code == 302, resp.text
    loc = resp.headers["Location"]
    return loc, {k: v[0] for k, v in parse_qs(urlparse(loc).query).items()}


def _exchange(api, code, redirect_uri=None, **extra):
    return api.token(
        grant_type="authorization_code", code=code, redirect_uri=redirect_uri or api.REDIRECT, **extra
    )


# -- token endpoint -------------------------------------------------------------------------------


def test_client_credentials_json_form_and_basic(api, sandbox):
    r = api.token(grant_type="client_credentials")
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and "refresh_token" not in body
    assert r.headers["Cache-Control"] == "no-store"

    form = {"grant_type": "client_credentials", "client_id": "demo-client", "client_secret": "demo-secret"}
    r = api.http.post(f"{api.url}/api/v1/token", data=form, timeout=10)
    assert r.status_code == 200 and r.json()["access_token"] != body["access_token"]

    r = api.http.post(
        f"{api.url}/api/v1/token",
        data={"grant_type": "client_credentials"},
        auth=("demo-client", "demo-secret"),
    )
    assert r.status_code == 200
    assert sandbox.counters()["token_grants"]["client_credentials"] == 3

    providers = api.get("/api/v1/providers", r.json()["access_token"])
    assert providers.status_code == 200
    assert {"id", "name", "status"} <= set(providers.json()[0]) and providers.json()[0]["id"] == "1000"
    assert api.get("/api/v1/providers").status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"grant_type": "client_credentials", "client_secret": "wrong"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "nobody"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({}, 400, "invalid_request"),
        ({"grant_type": "authorization_code"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "not-a-token"}, 400, "invalid_grant"),
    ],
)
def test_token_errors_are_oauth_style(api, body, status, error):
    r = api.token(**body)
    assert r.status_code == status and r.json()["error"] == error and r.json()["error_description"]
    if status == 401:
        assert "WWW-Authenticate" in r.headers


def test_basic_auth_with_bad_secret(api):
    bad = base64.b64encode(b"demo-client:nope").decode()
    r = api.http.post(
        f"{api.url}/api/v1/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {bad}"},
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


# -- authorize ------------------------------------------------------------------------------------


def test_authorize_approve_exchange_single_use(api, sandbox):
    loc, cb = _callback(api.authorize())
    assert loc.startswith(api.REDIRECT) and cb["state"] == "st-123" and cb["code"]
    r = _exchange(api, cb["code"])
    assert r.status_code == 200, r.text
    tok = r.json()
    assert {"access_token", "token_type", "expires_in", "refresh_token", "scope"} <= set(tok)
    assert len(tok["scope"].split()) == 8
    assert api.fdx("/customers/current", tok["access_token"]).json()["customerId"] == "cust-0001"
    again = _exchange(api, cb["code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    counters = sandbox.counters()
    assert counters["token_grants"]["authorization_code"] == 1 and counters["invalid_grant"] == 1


def test_code_expired_and_redirect_mismatch(api, sandbox):
    _, cb = _callback(api.authorize())
    r = _exchange(api, cb["code"], redirect_uri="http://127.0.0.1:8976/other")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    sandbox.configure(code_ttl=0)
    _, cb = _callback(api.authorize())
    r = _exchange(api, cb["code"])
    assert (
        r.status_code == 400
        and r.json()["error"] == "invalid_grant"
        and "expired" in r.json()["error_description"]
    )


def test_code_bound_to_client(api, sandbox):
    sandbox.register_client("other-app", "s3cret", ["https://app.example.com/cb"])
    _, cb = _callback(api.authorize())
    r = _exchange(api, cb["code"], client_id="other-app", client_secret="s3cret")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_deny_mode_and_login_hint(api, sandbox):
    sandbox.configure(consent_mode="deny")
    loc, cb = _callback(api.authorize())
    assert cb == {
        "error": "access_denied",
        "error_description": "The user denied the access",
        "state": "st-123",
    }
    assert "error_description=The+user+denied+the+access" in loc
    sandbox.configure(consent_mode="approve", consent_customer_id="cust-0002")
    _, cb = _callback(api.authorize())
    tok = _exchange(api, cb["code"]).json()
    assert api.fdx("/customers/current", tok["access_token"]).json()["customerId"] == "cust-0002"
    _, cb = _callback(api.authorize(login_hint="cust-0003"))
    tok = _exchange(api, cb["code"]).json()
    assert api.fdx("/customers/current", tok["access_token"]).json()["customerId"] == "cust-0003"


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_prompt_mode_html_form(api, sandbox, decision):
    sandbox.configure(consent_mode="prompt")
    page = api.authorize(scope="ACCOUNT_BASIC TRANSACTIONS", state="s p&ce")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Approve" in html and "Deny" in html and "TRANSACTIONS" in html and "demo-client" in html
    action_match = re.search(r'<form method="post" action="([^"]+)"', html)
    request_match = re.search(r'name="request_id" value="([^"]+)"', html)
    assert action_match and request_match
    action, request_id = action_match.group(1), request_match.group(1)
    form = {"request_id": request_id, "customer_id": "cust-0002", "decision": decision}
    r = api.http.post(f"{api.url}{action}", data=form, allow_redirects=False)
    _, cb = _callback(r)
    assert cb["state"] == "s p&ce"
    if decision == "deny":
        assert cb["error"] == "access_denied"
        return
    tok = _exchange(api, cb["code"]).json()
    assert tok["scope"] == "ACCOUNT_BASIC TRANSACTIONS"
    assert api.fdx("/accounts", tok["access_token"]).status_code == 200
    assert api.fdx("/customers/current", tok["access_token"]).json()["code"] == "602"
    # the pending request is single-use
    again = api.http.post(f"{api.url}{action}", data=form, allow_redirects=False)
    assert again.status_code == 400 and "Location" not in again.headers


def test_unregistered_redirect_and_client_are_refused(api, sandbox):
    for params in (
        {"redirect_uri": "https://evil.example.com/cb"},
        {"redirect_uri": "http://10.0.0.1:8080/cb"},
        {"client_id": "unknown-client"},
    ):
        r = api.authorize(**params)
        assert r.status_code == 400 and "Location" not in r.headers, params
    json_err = api.http.get(
        f"{api.url}/api/v1/authorize",
        params={
            "client_id": "nope",
            "redirect_uri": api.REDIRECT,
            "response_type": "code",
            "scope": "ACCOUNT_BASIC",
        },
        headers={"Accept": "application/json"},
        allow_redirects=False,
    )
    assert json_err.status_code == 400 and json_err.json()["error"] == "invalid_client"
    sandbox.register_client("partner", "pw", ["https://partner.example.com/callback"])
    r = api.authorize(client_id="partner", redirect_uri="https://partner.example.com/callback")
    _, cb = _callback(r)
    tok = _exchange(
        api, cb["code"], "https://partner.example.com/callback", client_id="partner", client_secret="pw"
    )
    assert tok.status_code == 200
    # exact match only for registered clients
    assert (
        api.authorize(client_id="partner", redirect_uri="https://partner.example.com/callback2").status_code
        == 400
    )
    assert api.authorize(client_id="partner", redirect_uri=api.REDIRECT).status_code == 400


def test_bad_scope_redirects_with_invalid_scope(api):
    _, cb = _callback(api.authorize(scope="ACCOUNT_BASIC TRANSACTION"))
    assert cb["error"] == "invalid_scope" and cb["state"] == "st-123"
    _, cb = _callback(api.authorize(response_type="token"))
    assert cb["error"] == "unsupported_response_type"


# -- refresh tokens -------------------------------------------------------------------------------


def test_refresh_without_rotation_is_flinks_like(api, sandbox):
    refresh = sandbox.grant_consent("cust-0001")
    for _ in range(3):
        r = api.refresh(refresh)
        assert r.status_code == 200 and "refresh_token" not in r.json()
    assert sandbox.counters()["token_grants"]["refresh_token"] == 3


def test_rotation_grace_and_invalid_grant_counter(api, sandbox):
    sandbox.configure(rotate_refresh_tokens=True)
    t0 = sandbox.grant_consent()
    t1 = api.refresh(t0).json()["refresh_token"]
    assert t1 != t0
    # re-using the immediately previous token inside the grace window answers with the current one
    assert api.refresh(t0).json()["refresh_token"] == t1
    t2 = api.refresh(t1).json()["refresh_token"]
    assert t2 not in (t0, t1)
    r = api.refresh(t0)  # two rotations old
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    sandbox.configure(refresh_grace_seconds=0)
    t3 = api.refresh(t2).json()["refresh_token"]
    assert api.refresh(t2).status_code == 400  # no grace
    assert api.refresh(t3).status_code == 200
    assert sandbox.counters()["invalid_grant"] == 2


def test_concurrent_refreshers_share_one_rotation(api, sandbox):
    sandbox.configure(rotate_refresh_tokens=True)
    t0 = sandbox.grant_consent()
    results = []
    barrier = threading.Barrier(8)

    def worker():
        mine = type(api)(sandbox)  # one HTTP session per thread
        barrier.wait()
        results.append(mine.refresh(t0))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({r.json()["refresh_token"] for r in results}) == 1
    assert sandbox.counters()["invalid_grant"] == 0


def test_idle_consent_lapses_after_30_days(api, sandbox):
    refresh = sandbox.grant_consent()
    sandbox.configure(now="2026-12-15T00:00:00Z")  # 25 days later: still fine, and it counts as use
    assert api.refresh(refresh).status_code == 200
    sandbox.configure(now="2027-01-20T00:00:00Z")  # 36 days idle
    r = api.refresh(refresh)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


# -- revoke, scopes, expiry -----------------------------------------------------------------------


def test_revoke_endpoint_gives_602_and_kills_refresh(api, sandbox):
    refresh = sandbox.grant_consent()
    access = api.refresh(refresh).json()["access_token"]
    assert api.fdx("/accounts", access).status_code == 200
    r = api.http.delete(f"{api.url}/api/v1/revoke", headers={"Authorization": f"Bearer {access}"})
    assert r.status_code == 204
    r = api.fdx("/accounts", access)
    assert r.status_code == 401 and r.json()["code"] == "602"
    assert api.refresh(refresh).json()["error"] == "invalid_grant"


def test_admin_revoke_by_customer_and_by_token(api, sandbox):
    a = sandbox.grant_consent("cust-0001")
    b = sandbox.grant_consent("cust-0002")
    access_a = api.refresh(a).json()["access_token"]
    sandbox.revoke_consent(customer_id="cust-0001")
    assert api.fdx("/accounts", access_a).json()["code"] == "602"
    assert api.refresh(b).status_code == 200
    sandbox.revoke_consent(refresh_token=b)
    assert api.refresh(b).status_code == 400


def test_missing_scope_is_602(api):
    token = api.customer_token(scopes=["ACCOUNT_BASIC"])
    assert api.fdx("/accounts", token).status_code == 200
    for path in ("/accounts?resultType=details", "/customers/current"):
        r = api.fdx(path, token)
        assert r.status_code == 401 and r.json()["code"] == "602", path


def test_expired_forged_and_client_tokens_are_401_not_602(api, sandbox):
    token = api.customer_token()
    assert api.fdx("/accounts", token).status_code == 200
    assert sandbox.expire_access_tokens() >= 1
    for bad in (token, "forged", None):
        r = api.fdx("/accounts", bad)
        assert r.status_code == 401 and r.json()["code"] == "401", bad
        assert "invalid or expired" in r.json()["message"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    sandbox.configure(access_token_ttl=0)
    r = api.refresh(sandbox.grant_consent())
    assert r.json()["expires_in"] == 0
    assert api.fdx("/accounts", r.json()["access_token"]).json()["code"] == "401"
    sandbox.configure(access_token_ttl=300)
    client_token = api.token(grant_type="client_credentials").json()["access_token"]
    r = api.fdx("/accounts", client_token)
    assert r.status_code == 401 and r.json()["code"] != "602"
