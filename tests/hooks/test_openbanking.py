"""OpenBankingHook against the sandbox, over real HTTP on 127.0.0.1 (issue 3)."""

from __future__ import annotations

import json
import logging
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_openbanking.exceptions import (
    AccessTokenRejectedError,
    ApiError,
    AuthorizationCallbackError,
    ConnectionConfigError,
    ConsentRequiredError,
    PaginationError,
    TransientApiError,
)
from airflow_provider_openbanking.hooks import openbanking as hook_module
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache
from airflow_provider_openbanking.pagination import PageStats
from tests.fixtures_openbanking import REDIRECT_URI, stored_refresh_token


def _first_account_ids(sandbox, customer_id="cust-0001"):
    return [a["accountId"] for a in sandbox.truth_accounts(customer_id)]


# -- connection -----------------------------------------------------------------------------------


def test_connection_from_env_json_only(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    providers = hook.get_providers()
    assert providers and all("id" in p for p in providers)
    assert hook.config.base_url == sandbox.url
    assert hook.config.scopes[0] == "ACCOUNT_BASIC" and len(hook.config.scopes) == 8


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"host": ""}, "host"),
        ({"host": "ftp://bank"}, "host"),
        ({"login": ""}, "login"),
        ({"password": ""}, "password"),
        ({"timeout": "soon"}, "timeout"),
        ({"page_size": -5}, "page_size"),
        ({"scopes": "ACCOUNT_BASIC TRANSACTION"}, "scopes"),
        ({"verify": "maybe?"}, None),  # a non-boolean string is a CA bundle path: accepted
        ({"token_path": "api/v1/token"}, "token_path"),
    ],
)
def test_bad_connection_field_names_field_and_conn_id(make_conn, overrides, field):
    conn_id = make_conn("ob_bad", refresh_token="x" * 20, **overrides)
    hook = OpenBankingHook(conn_id)
    if field is None:
        assert hook.config.verify == "maybe?"
        return
    with pytest.raises(ConnectionConfigError) as err:
        hook.get_access_token()
    assert err.value.field.startswith(field)
    assert "ob_bad" in str(err.value) and field in str(err.value)


def test_wrong_client_secret_is_a_clear_config_error(make_conn):
    conn_id = make_conn(password="not-the-secret")
    ok, message = OpenBankingHook(conn_id).test_connection()
    assert not ok
    assert "login/password" in message and "not-the-secret" not in message


def test_test_connection_reports_consent(openbanking_conn):
    ok, message = OpenBankingHook(openbanking_conn).test_connection()
    assert ok, message
    assert "customer consent OK" in message


# -- authorization code flow (seed steps 2 and 3) ------------------------------------------------


def _authorize(url: str) -> str:
    resp = requests.get(url, allow_redirects=False, timeout=10)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def test_authorize_exchange_and_store(make_conn, sandbox):
    conn_id = make_conn("ob_auth", refresh_token="")
    hook = OpenBankingHook(conn_id)
    url = hook.authorization_url("st-123", correlation_id="fce84d61-dfa8-4e2b-bd94-f1ec6a445841")
    query = parse_qs(urlsplit(url).query)
    assert query["response_type"] == ["code"] and query["client_id"] == ["demo-client"]
    assert query["redirect_uri"] == [REDIRECT_URI] and query["provider_id"] == ["1000"]
    assert query["scope"][0].split(" ")[0] == "ACCOUNT_BASIC" and "%20" in url
    code = hook.parse_callback(_authorize(url), "st-123")
    tokens = hook.exchange_code(code)
    assert "***" in repr(tokens) and tokens["refresh_token"] not in repr(tokens)
    assert stored_refresh_token(conn_id) == tokens["refresh_token"]
    # A second hook (cache cleared, as in the next task process) reads the stored token.
    clear_token_cache()
    accounts = list(OpenBankingHook(conn_id).iter_accounts())
    assert [a["accountId"] for a in accounts] == _first_account_ids(sandbox)
    # Codes are single-use.
    with pytest.raises(ApiError) as err:
        hook.exchange_code(code)
    assert "single-use" in str(err.value) and code not in str(err.value)


def test_callback_errors(openbanking_conn):
    hook = OpenBankingHook(openbanking_conn)
    with pytest.raises(AuthorizationCallbackError) as err:
        hook.parse_callback(
            f"{REDIRECT_URI}?error=access_denied&error_description=The+user+denied+the+access&state=s1", "s1"
        )
    assert err.value.error == "access_denied" and "The user denied the access" in str(err.value)
    with pytest.raises(AuthorizationCallbackError, match="state does not match"):
        hook.parse_callback(f"{REDIRECT_URI}?code=abc&state=evil", "s1")


def test_denied_consent_from_sandbox(openbanking_conn, sandbox):
    sandbox.configure(consent_mode="deny")
    hook = OpenBankingHook(openbanking_conn)
    with pytest.raises(AuthorizationCallbackError, match="access_denied"):
        hook.parse_callback(_authorize(hook.authorization_url("s2")), "s2")


# -- data endpoints ------------------------------------------------------------------------------


def test_accounts_unwrapped_and_filtered(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    truth = sandbox.truth_accounts("cust-0001")
    light = list(hook.iter_accounts())
    assert [a["accountId"] for a in light] == [a["accountId"] for a in truth]
    assert {a["accountCategory"] for a in light} >= {"DEPOSIT_ACCOUNT", "LOC_ACCOUNT", "INVESTMENT_ACCOUNT"}
    assert all(len(a) > 1 and "accountNumber" not in a for a in light)
    details = list(hook.iter_accounts("details", account_ids=[truth[0]["accountId"]]))
    assert len(details) == 1 and details[0]["accountNumber"] == truth[0]["accountNumber"]
    one = hook.get_account(truth[0]["accountId"])
    assert one["accountId"] == truth[0]["accountId"] and one["accountCategory"] == truth[0]["accountCategory"]
    with pytest.raises(ValueError, match="result_type"):
        list(hook.iter_accounts("everything"))


def test_transactions_paginate_lazily_and_match_truth(make_conn, sandbox):
    hook = OpenBankingHook(make_conn(page_size=25))
    account_id = _first_account_ids(sandbox)[0]
    stats = PageStats()
    records = hook.iter_transactions(account_id, "2026-09-01", "2026-10-31", stats=stats)
    first = next(records)
    assert stats.pages == 1 and "transactionId" in first and "depositTransaction" not in first
    rest = list(records)
    truth = sandbox.truth_transactions(account_id, "2026-09-01", "2026-10-31")
    got = [first, *rest]
    assert [t["transactionId"] for t in got] == [t["transactionId"] for t in truth]
    assert len(truth) > 50 and stats.pages == -(-len(truth) // 25)
    assert got[0]["accountCategory"] == "DEPOSIT_ACCOUNT"


def test_dates_accept_date_objects_and_reject_bad_ranges(openbanking_conn, sandbox):
    import datetime as dt

    import pendulum

    hook = OpenBankingHook(openbanking_conn)
    account_id = _first_account_ids(sandbox)[0]
    a = [t["transactionId"] for t in hook.iter_transactions(account_id, dt.date(2026, 10, 1), "2026-10-15")]
    b = [
        t["transactionId"]
        for t in hook.iter_transactions(
            account_id, pendulum.datetime(2026, 10, 1), dt.datetime(2026, 10, 15, 12)
        )
    ]
    assert a == b and a
    with pytest.raises(ValueError, match="after end_time"):
        list(hook.iter_transactions(account_id, "2026-10-15", "2026-10-01"))
    with pytest.raises(ValueError, match="start_time"):
        list(hook.iter_transactions(account_id, "2026-02-30"))


def test_other_endpoints(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    truth = sandbox.truth_accounts("cust-0001")
    deposit = next(a for a in truth if a["accountCategory"] == "DEPOSIT_ACCOUNT")["accountId"]
    customer = hook.get_customer()
    assert customer.get("customerId")
    contact = hook.get_account_contact(deposit)
    assert set(contact) & {"holders", "emails", "addresses", "telephones"}
    networks = list(hook.iter_payment_networks(deposit))
    assert networks and all("identifier" in n or "bankId" in n for n in networks)
    holdings = list(hook.iter_holdings())
    investment_ids = {a["accountId"] for a in truth if a["accountCategory"] == "INVESTMENT_ACCOUNT"}
    assert holdings and {h["accountId"] for h in holdings} == investment_ids
    statements = list(hook.iter_statements(deposit))
    assert statements
    pdf = b"".join(hook.download_statement(deposit, statements[0]["statementId"]))
    assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-1024:]


def test_statement_redirect_and_processing_retry(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    deposit = _first_account_ids(sandbox)[0]
    sid = next(iter(hook.iter_statements(deposit)))["statementId"]
    sandbox.configure(statement_redirect=True, statement_processing=2)
    before = sandbox.counters()["status"].get("400", 0)
    pdf = b"".join(hook.download_statement(deposit, sid))
    assert pdf.startswith(b"%PDF")
    assert sandbox.counters()["status"].get("400", 0) - before == 2


def test_hostile_account_id_cannot_change_the_endpoint(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    for hostile in ("../accounts", "..", "x/../../customers/current", "a?resultType=details", "a#b"):
        with pytest.raises(ApiError) as err:
            hook.get_account(hostile)
        assert err.value.status == 404 and err.value.code == "701", str(err.value)


# -- errors ---------------------------------------------------------------------------------------


def test_error_names_endpoint_status_code_and_correlation_ids(openbanking_conn):
    hook = OpenBankingHook(openbanking_conn)
    with pytest.raises(ApiError) as err:
        hook.get_account("does-not-exist")
    exc = err.value
    text = str(exc)
    assert exc.status == 404 and exc.code == "701"
    assert "GET /api/fdx/5/accounts/does-not-exist" in text and "HTTP 404" in text and "code 701" in text
    assert exc.correlation_id and exc.correlation_id in text and exc.trace_id and exc.trace_id in text


def test_revoked_consent_is_non_retryable(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    assert list(hook.iter_accounts())
    sandbox.revoke_consent(customer_id="cust-0001")
    with pytest.raises(ConsentRequiredError) as err:
        list(hook.iter_accounts())
    assert isinstance(err.value, AirflowFailException)
    assert err.value.code == "602" and "authorize --conn-id openbanking_default" in str(err.value)
    # The refresh token is dead too: refreshing raises the same error. (A new process would
    # first reuse the access token the consent store shares, so force the refresh grant.)
    clear_token_cache()
    with pytest.raises(ConsentRequiredError, match="refresh token was rejected"):
        OpenBankingHook(openbanking_conn).refresh_access_token()


def test_missing_scope_is_602(make_conn, sandbox):
    hook = OpenBankingHook(make_conn(consent_scopes=["ACCOUNT_BASIC"]))
    assert list(hook.iter_accounts())
    with pytest.raises(ConsentRequiredError):
        list(hook.iter_transactions(_first_account_ids(sandbox)[0]))


def test_no_refresh_token_anywhere(make_conn):
    hook = OpenBankingHook(make_conn(refresh_token=""))
    with pytest.raises(ConsentRequiredError, match="no refresh token"):
        hook.get_access_token()


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 429, "code": "1207", "retry_after": 0.1, "count": 2},
        {"kind": "status", "status": 422, "code": "1207", "count": 2},
        {"kind": "status", "status": 503, "count": 3},
        {"kind": "status", "status": 500, "count": 1},
        {"kind": "drop", "count": 2},
        {"kind": "malformed", "count": 1},
        {"kind": "html", "status": 502, "count": 2},
    ],
    ids=lambda f: f"{f['kind']}-{f.get('status', '')}",
)
def test_transient_faults_are_retried(openbanking_conn, sandbox, fault):
    hook = OpenBankingHook(openbanking_conn)
    expected = [a["accountId"] for a in hook.iter_accounts()]
    sandbox.inject({**fault, "path": "/api/fdx/5/accounts"})
    before = sandbox.counters()["faults_injected"]
    assert [a["accountId"] for a in hook.iter_accounts()] == expected
    assert sandbox.counters()["faults_injected"] - before == fault["count"]


def test_retry_after_is_honoured(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    list(hook.iter_accounts())
    sandbox.inject(
        {"kind": "status", "status": 429, "code": "1207", "retry_after": 1, "count": 1, "path": "/accounts"}
    )
    start = time.monotonic()
    list(hook.iter_accounts())
    assert time.monotonic() - start >= 0.95


def test_retries_are_bounded(make_conn, sandbox):
    hook = OpenBankingHook(make_conn(max_attempts=3))
    hook.get_access_token()
    sandbox.inject({"kind": "status", "status": 503, "count": 10, "path": "/accounts"})
    with pytest.raises(TransientApiError) as err:
        list(hook.iter_accounts())
    assert err.value.status == 503 and "/api/fdx/5/accounts" in str(err.value)
    assert sandbox.counters()["faults_injected"] == 3


def test_pagination_loop_is_stopped(make_conn, sandbox):
    hook = OpenBankingHook(make_conn(page_size=10))
    account_id = _first_account_ids(sandbox)[0]
    sandbox.inject({"kind": "repeat_offset", "count": 1, "path": "/transactions"})
    with pytest.raises(PaginationError, match="same next page"):
        list(hook.iter_transactions(account_id))


def test_no_data_1107_is_an_empty_result(openbanking_conn, sandbox):
    sandbox.configure(empty_as_1107=True)
    hook = OpenBankingHook(openbanking_conn)
    account_id = _first_account_ids(sandbox)[0]
    assert list(hook.iter_transactions(account_id, "2001-01-01", "2001-01-31")) == []


# -- tokens ---------------------------------------------------------------------------------------


def test_access_token_is_cached_across_hooks(openbanking_conn, sandbox):
    before = sandbox.counters()["token_grants"].get("refresh_token", 0)
    for _ in range(3):
        list(OpenBankingHook(openbanking_conn).iter_accounts())
    assert sandbox.counters()["token_grants"].get("refresh_token", 0) - before == 1


def test_refresh_before_expiry(make_conn, sandbox):
    sandbox.configure(access_token_ttl=2)
    hook = OpenBankingHook(make_conn())
    first = hook.get_access_token()
    assert hook.get_access_token() == first
    time.sleep(1.85)  # inside the skew window (a tenth of the lifetime) before expiry
    assert hook.get_access_token() != first
    assert sandbox.counters()["status"].get("401", 0) == 0


def test_401_mid_pagination_refreshes_and_replays(make_conn, sandbox):
    """The server expires the token while the client still trusts it: one 401, no page lost."""
    sandbox.configure(access_token_ttl=1)
    hook = OpenBankingHook(make_conn(page_size=20))
    account_id = _first_account_ids(sandbox)[0]
    truth = [t["transactionId"] for t in sandbox.truth_transactions(account_id)]
    records = hook.iter_transactions(account_id)
    got = [next(records)["transactionId"]]
    # Make the client believe its (server-expired) token has an hour left.
    key = hook._customer_tokens.key
    hook_module._CACHE[key].expires_at = time.time() + 3600
    time.sleep(1.2)
    sandbox.configure(access_token_ttl=300)  # the replay's token outlives the test, however slow
    got += [t["transactionId"] for t in records]
    assert got == truth
    assert sandbox.counters()["status"].get("401", 0) == 1


def test_a_fresh_token_that_dies_too_is_replaced_again(openbanking_conn, sandbox):
    """A replay's fresh token can die as well (a stalled request outlives a short token): the
    request is replayed with another fresh token instead of failing the account."""
    hook = OpenBankingHook(openbanking_conn)
    hook.get_access_token()
    sandbox.inject({"kind": "expire_token", "path": "/accounts", "count": 2})
    before = sandbox.counters()["token_grants"]["refresh_token"]
    assert [a["accountId"] for a in hook.iter_accounts()] == _first_account_ids(sandbox)
    counters = sandbox.counters()
    assert counters["status"].get("401", 0) == 2 and counters["faults_injected"] == 2
    assert counters["token_grants"]["refresh_token"] == before + 2  # one fresh token per replay


def test_tokens_that_never_work_end_the_call_at_its_first_attempt(openbanking_conn, sandbox):
    """Misconfiguration (no token is ever accepted) is not retried: the call ends after
    MAX_TOKEN_REPLAYS replays, each with a fresh token, and says what to check."""
    hook = OpenBankingHook(openbanking_conn)
    sandbox.inject({"kind": "expire_token", "path": "/accounts", "count": 10})
    with pytest.raises(AccessTokenRejectedError) as err:
        list(hook.iter_accounts())
    assert "2 freshly refreshed access tokens were refused too" in str(err.value)
    assert "client id/secret" in str(err.value) and not isinstance(err.value, TransientApiError)
    assert sandbox.counters()["status"].get("401", 0) == 3  # the first try and two replays


def test_a_refused_token_never_comes_back_to_the_replay(openbanking_conn, sandbox):
    """While one thread hands back a refused token, another thread that misses the cache must
    not take that same token back from the consent store (it is still there until the refusal
    is recorded) and cache it for the first thread's replay, whose second 401 would end the
    task: a CI run of the 2-second-token fault test once failed that way."""
    hook = OpenBankingHook(openbanking_conn)
    refused = hook.get_access_token()  # cached and shared through the consent store
    source = hook._customer_tokens
    record_refusal = source.on_invalidate
    assert record_refusal is not None
    seen: list[str] = []

    def slow_refusal(token: str) -> None:
        # Another thread asks for a token right now, and gets up to 0.3 s to do so.
        other = threading.Thread(target=lambda: seen.append(source.get()))
        other.start()
        other.join(0.3)
        record_refusal(token)

    source.on_invalidate = slow_refusal
    source.invalidate(refused)
    replay = source.get()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen, "the other thread got a token"
    # (It may have read the refused token before the refusal began: its own first try then meets
    # the 401 and replays. What must not happen is the refused token cached again.)
    assert replay != refused
    assert source.get() != refused


def test_threads_sharing_a_hook_refresh_once(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        tokens.append(hook.get_access_token())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert sandbox.counters()["token_grants"].get("refresh_token", 0) == 1


def test_rotating_refresh_token_is_stored_before_use(make_conn, sandbox):
    sandbox.configure(rotate_refresh_tokens=True, refresh_grace_seconds=0)
    conn_id = make_conn()
    original = json.loads(__import__("os").environ[f"AIRFLOW_CONN_{conn_id.upper()}"])["extra"][
        "refresh_token"
    ]
    OpenBankingHook(conn_id).get_access_token()
    first = stored_refresh_token(conn_id)
    assert first and first != original
    clear_token_cache()  # the next task process: it shares the stored access token, no grant
    OpenBankingHook(conn_id).get_access_token()
    assert stored_refresh_token(conn_id) == first
    assert sandbox.counters()["token_grants"]["refresh_token"] == 1
    clear_token_cache()  # a process that must refresh (the health check's keep-alive)
    OpenBankingHook(conn_id).refresh_access_token()
    second = stored_refresh_token(conn_id)
    assert second and second not in (first, original)
    assert sandbox.counters()["invalid_grant"] == 0


def _refresh_in_subprocess(conn_json: str, home: str, queue) -> None:  # pragma: no cover - child
    import os

    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW_CONN_OB_ROT"] = conn_json
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook as Hook

    try:
        Hook("ob_rot").get_access_token()
        queue.put("ok")
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_eight_processes_refreshing_a_rotating_token(make_conn, sandbox):
    import multiprocessing
    import os

    sandbox.configure(rotate_refresh_tokens=True, refresh_grace_seconds=0)
    conn_id = make_conn("ob_rot", rotation_wait=5)
    conn_json = os.environ["AIRFLOW_CONN_OB_ROT"]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_refresh_in_subprocess, args=(conn_json, os.environ["AIRFLOW_HOME"], queue))
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * 8, results
    # One process holds the consent's refresh lease and makes the grant; the others use the
    # access token it stores: one refresh grant per consent per access-token lifetime.
    assert sandbox.counters()["token_grants"]["refresh_token"] == 1
    assert sandbox.counters()["invalid_grant"] == 0
    # Whatever the interleaving, the store ends with a token the server still accepts.
    clear_token_cache()
    assert OpenBankingHook(conn_id).get_access_token()


def test_revoke(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    list(hook.iter_accounts())
    hook.revoke()
    clear_token_cache()
    with pytest.raises(ConsentRequiredError):
        list(OpenBankingHook(openbanking_conn).iter_accounts())


def test_form_encoded_token_requests(make_conn, sandbox):
    hook = OpenBankingHook(make_conn(token_request_format="form"))
    assert list(hook.iter_accounts())


# -- secrets --------------------------------------------------------------------------------------


def test_no_secret_in_logs_reprs_or_errors(make_conn, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox.configure(rotate_refresh_tokens=True, access_token_ttl=1)
    conn_id = make_conn("ob_secret", page_size=10)
    hook = OpenBankingHook(conn_id)
    secrets = {"demo-secret", hook.config.refresh_token}
    code = hook.parse_callback(_authorize(hook.authorization_url("s9")), "s9")
    secrets.add(code)
    tokens = hook.exchange_code(code)
    secrets |= {tokens["access_token"], tokens["refresh_token"]}
    account_id = _first_account_ids(sandbox)[0]
    sandbox.inject({"kind": "status", "status": 503, "count": 1, "path": "/transactions"})
    list(hook.iter_transactions(account_id))
    time.sleep(1.1)
    list(hook.iter_accounts("details"))
    secrets.add(hook.get_access_token())
    secrets.add(stored_refresh_token(conn_id))
    errors = []
    sandbox.revoke_consent(customer_id="cust-0001")
    for call in (lambda: list(hook.iter_accounts()), lambda: hook.exchange_code(code)):
        try:
            call()
        except Exception as exc:
            errors.append(f"{exc!s} {exc!r}")
    assert len(errors) == 2
    haystack = "\n".join([caplog.text, repr(hook), repr(hook.config), repr(tokens), *errors])
    leaked = [s for s in secrets if s and s in haystack]
    assert not leaked, f"{len(leaked)} secret(s) leaked"
    assert "retrying" in caplog.text  # the 503 was logged, so the haystack is not empty
