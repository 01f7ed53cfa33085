"""``consent_status``: every state, against the sandbox, never raising for expected failures."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from airflow_provider_openbanking.consent import (
    ConsentStatus,
    consent_status,
    days_until_idle_lapse,
    health_record,
    summarize_health,
)
from airflow_provider_openbanking.consents import ConsentRecord, fingerprint
from airflow_provider_openbanking.consents import health as consent_module
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache
from tests.fixtures_openbanking import stored_refresh_token
from tests.test_cli import _fast_rejection  # noqa: F401  (autouse fixture)

UTC = dt.timezone.utc


def _no_secret(status: ConsentStatus, *secrets: str | None) -> None:
    dumped = json.dumps(status.as_dict())
    for secret in secrets:
        assert not secret or secret not in dumped


def test_ok(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    status = consent_status(hook, check_scopes=True)
    assert status.ok and not status.needs_authorization, status.message
    assert status.conn_id == openbanking_conn and 0 < status.access_token_ttl <= 300
    assert status.scopes is not None and len(status.scopes) == 8 and status.missing_scopes == ()
    assert status.last_refresh_at and status.days_until_idle_lapse == 30.0
    _no_secret(status, hook.config.refresh_token, hook.get_access_token())


def test_no_consent(make_conn):
    status = consent_status(OpenBankingHook(make_conn(refresh_token="")))
    assert status.state == "no_consent" and status.needs_authorization
    assert "airflow-openbanking authorize --conn-id openbanking_default" in status.message
    assert status.access_token_ttl is None
    json.dumps(status.as_dict())


def test_refresh_rejected(openbanking_conn, sandbox):
    sandbox.revoke_consent(customer_id="cust-0001")
    status = consent_status(OpenBankingHook(openbanking_conn))
    assert status.state == "refresh_rejected" and status.needs_authorization, status.message
    assert "authorize" in status.message and "HTTP 400" in status.message


def test_revoked_while_an_access_token_is_still_cached(openbanking_conn, sandbox):
    hook = OpenBankingHook(openbanking_conn)
    hook.get_access_token()  # a running worker holds a valid access token...
    sandbox.revoke_consent(customer_id="cust-0001")  # ...when the customer revokes
    status = consent_status(hook)
    assert status.state == "revoked" and status.needs_authorization
    assert "602" in status.message and status.access_token_ttl


def test_scope_missing_from_the_granted_scopes(make_conn):
    conn_id = make_conn(consent_scopes="ACCOUNT_BASIC TRANSACTIONS", scopes="ACCOUNT_BASIC STATEMENTS")
    hook = OpenBankingHook(conn_id)
    assert consent_status(hook).ok  # scopes are only compared when asked
    status = consent_status(hook, check_scopes=True)
    assert status.state == "scope_missing" and status.missing_scopes == ("STATEMENTS",)
    assert status.scopes == ("ACCOUNT_BASIC", "TRANSACTIONS")
    assert consent_status(hook, True, required_scopes="TRANSACTIONS").ok


def test_scope_missing_found_by_probing_when_the_server_does_not_say(make_conn, monkeypatch, sandbox):
    monkeypatch.setattr(consent_module, "_granted", lambda record: None)
    conn_id = make_conn(
        consent_scopes="ACCOUNT_BASIC TRANSACTIONS CUSTOMER_CONTACT",
        scopes="ACCOUNT_BASIC TRANSACTIONS STATEMENTS CUSTOMER_PERSONAL CUSTOMER_CONTACT INVESTMENTS",
    )
    status = consent_status(OpenBankingHook(conn_id), check_scopes=True)
    assert status.state == "scope_missing", status.message
    assert status.missing_scopes == ("STATEMENTS", "CUSTOMER_PERSONAL")
    assert status.scopes is None


def test_account_basic_missing_is_not_mistaken_for_a_revocation(make_conn, monkeypatch):
    monkeypatch.setattr(consent_module, "_granted", lambda record: None)
    conn_id = make_conn(consent_scopes="CUSTOMER_PERSONAL", scopes="ACCOUNT_BASIC CUSTOMER_PERSONAL")
    hook = OpenBankingHook(conn_id)
    unchecked = consent_status(hook)
    assert unchecked.state == "revoked" and "or ACCOUNT_BASIC not granted" in unchecked.message
    status = consent_status(hook, check_scopes=True)
    assert status.state == "scope_missing" and status.missing_scopes == ("ACCOUNT_BASIC",)


def test_consent_without_account_scopes_is_ok_when_the_server_says_so(make_conn):
    conn_id = make_conn(consent_scopes="CUSTOMER_PERSONAL", scopes="CUSTOMER_PERSONAL")
    status = consent_status(OpenBankingHook(conn_id), check_scopes=True)
    assert status.ok and status.scopes == ("CUSTOMER_PERSONAL",)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"password": "wrong-secret"}, "login/password"),
        ({"host": ""}, "field 'host'"),
        ({"host": "http://127.0.0.1:9", "max_attempts": 1}, "connection failed"),
    ],
)
def test_errors_are_a_state(make_conn, overrides, expected):
    status = consent_status(OpenBankingHook(make_conn(**overrides)))
    assert status.state == "error" and not status.needs_authorization
    assert expected in status.message and "wrong-secret" not in status.message


def test_unknown_connection():
    status = consent_status(OpenBankingHook("no_such_openbanking_conn"))
    assert (
        status.state == "error" and status.message == "Connection 'no_such_openbanking_conn' is not defined"
    )


def test_idle_clock_is_reported_before_and_after_the_check(openbanking_conn):
    hook = OpenBankingHook(openbanking_conn)
    old = (dt.datetime.now(UTC) - dt.timedelta(days=12)).isoformat(timespec="seconds")
    token = hook.config.refresh_token
    record = ConsentRecord(
        openbanking_conn, refresh_token=token, origin=fingerprint(token), updated_at=old, last_refresh_at=old
    )
    hook.consent_store.save(record)
    status = consent_status(hook)
    assert status.ok and f"before, it was last used at {old}" in status.message
    assert status.days_until_idle_lapse == 30.0 and status.last_refresh_at != old
    assert stored_refresh_token(openbanking_conn) == token


def test_days_until_idle_lapse():
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert days_until_idle_lapse("2026-11-15T12:00:00+00:00", now) == 20.0
    assert days_until_idle_lapse("2026-11-15T12:00:00", now) == 20.0  # naive = UTC
    assert days_until_idle_lapse("2026-10-01T00:00:00Z", now) == 0.0
    assert days_until_idle_lapse(None, now) is None
    assert days_until_idle_lapse("not a date", now) is None


def test_fresh_process_reads_the_store(openbanking_conn):
    """What the CLI writes, a new process (empty cache) reads: the contract behind ``status``."""
    consent_status(OpenBankingHook(openbanking_conn))
    clear_token_cache()
    assert consent_status(OpenBankingHook(openbanking_conn)).ok


# -- the health check: forced refresh, probes, idle warning and lapse (issue 9) ------------------


def _backdate_store(conn_id: str, token: str, days: float) -> str:
    when = (dt.datetime.now(UTC) - dt.timedelta(days=days)).isoformat(timespec="seconds")
    record = ConsentRecord(
        conn_id, refresh_token=token, origin=fingerprint(token), updated_at=when, last_refresh_at=when
    )
    OpenBankingHook(conn_id).consent_store.save(record)
    return when


def test_health_check_refreshes_even_with_a_cached_token_and_calls_each_cluster_once(make_conn, sandbox):
    token = sandbox.grant_consent("cust-0001")
    conn_id = make_conn(refresh_token=token)
    hook = OpenBankingHook(conn_id)
    hook.get_access_token()  # cached: a plain check would not refresh again
    _backdate_store(conn_id, token, 29)
    sandbox.configure(now="2026-12-19T23:59:59Z")  # and the bank's idle clock says 29 days too
    sandbox._call("DELETE", "/_admin/counters")
    status = consent_status(hook, True, refresh=True, probe_scopes=True)
    assert status.ok, status.message
    counters = sandbox.counters()
    assert counters["token_grants"]["refresh_token"] == 1
    fdx = {k: v for k, v in counters["requests"].items() if "/fdx/" in k}
    assert fdx == {
        "GET /api/fdx/5/accounts": 2,  # lightweight (ACCOUNT_BASIC) and details (ACCOUNT_DETAILED)
        "GET /api/fdx/5/accounts/{accountId}/transactions": 1,
        "GET /api/fdx/5/accounts/{accountId}/statements": 1,
        "GET /api/fdx/5/accounts/{accountId}/contact": 1,
        "GET /api/fdx/5/accounts/{accountId}/payment-networks": 1,
        "GET /api/fdx/5/customers/current": 1,
    }, fdx
    assert status.unchecked_scopes == ("INVESTMENTS",) and len(status.confirmed_scopes) == 7
    assert status.idle_days == 29.0 and status.days_until_idle_lapse == 30.0
    (warning,) = status.warnings
    assert "unused for 29 days, 1 day(s) before" in warning
    # the refresh reset the bank's idle clock too
    assert [c["last_used"] for c in sandbox.consents()] == [sandbox.config()["now"].replace("Z", ".000Z")]


@pytest.mark.parametrize(
    ("idle", "warn_within", "warned"),
    [(12, 7.0, False), (23.5, 7.0, True), (12, 20, True), (29, None, False)],
)
def test_idle_warning_threshold(make_conn, sandbox, idle, warn_within, warned):
    token = sandbox.grant_consent("cust-0001", idle_days=idle)
    conn_id = make_conn(refresh_token=token)
    _backdate_store(conn_id, token, idle)
    status = consent_status(OpenBankingHook(conn_id), refresh=True, warn_within_days=warn_within)
    assert status.ok and bool(status.warnings) is warned and status.idle_days == idle


def test_lapsed_is_told_apart_from_another_rejection(make_conn, sandbox):
    token = sandbox.grant_consent("cust-0001", idle_days=31)
    lapsed = make_conn("ob_lapsed", refresh_token=token)
    when = _backdate_store(lapsed, token, 31)
    status = consent_status(OpenBankingHook(lapsed), refresh=True)
    assert status.state == "lapsed" and status.needs_authorization
    assert status.last_refresh_at == when and status.days_until_idle_lapse == 0.0
    assert "unused for 31 days" in status.message and "HTTP 400" in status.message

    token = sandbox.grant_consent("cust-0001")
    rejected = make_conn("ob_rejected", refresh_token=token)
    _backdate_store(rejected, token, 5)  # used recently: something else killed it
    sandbox.revoke_consent(refresh_token=token)
    status = consent_status(OpenBankingHook(rejected), refresh=True)
    assert status.state == "refresh_rejected" and status.days_until_idle_lapse == 25.0


def test_revoked_at_the_bank_refreshes_but_every_data_call_is_refused(make_conn, sandbox):
    token = sandbox.grant_consent("cust-0002")
    conn_id = make_conn(refresh_token=token)
    sandbox.revoke_consent(refresh_token=token, at_bank=True)
    assert [c["bank_revoked"] for c in sandbox.consents()] == [True]
    hook = OpenBankingHook(conn_id)
    status = consent_status(hook, True, refresh=True, probe_scopes=True)
    assert status.state == "revoked" and status.access_token_ttl and status.last_refresh_at
    assert "602" in status.message and status.confirmed_scopes == () and status.missing_scopes == ()
    assert consent_status(hook).state == "revoked"  # the CLI's plain check agrees
    _no_secret(status, token)


def test_probes_win_over_the_scopes_the_server_reports(make_conn, monkeypatch):
    """The bank narrowed the consent but the token still claims every scope: calls tell."""
    conn_id = make_conn(consent_scopes="ACCOUNT_BASIC ACCOUNT_DETAILED TRANSACTIONS CUSTOMER_PERSONAL")
    monkeypatch.setattr(consent_module, "_granted", lambda record: consent_module.parse_scopes(None))
    hook = OpenBankingHook(conn_id)
    assert consent_status(hook, check_scopes=True).ok  # the server's word alone
    status = consent_status(hook, True, refresh=True, probe_scopes=True)
    assert status.state == "scope_missing", status.message
    assert status.missing_scopes == ("ACCOUNT_PAYMENTS", "STATEMENTS", "CUSTOMER_CONTACT")
    assert status.unchecked_scopes == ("INVESTMENTS",)


def test_probing_a_consent_without_account_scopes(make_conn):
    conn_id = make_conn(
        consent_scopes="CUSTOMER_PERSONAL INVESTMENTS", scopes="CUSTOMER_PERSONAL INVESTMENTS"
    )
    status = consent_status(OpenBankingHook(conn_id), True, refresh=True, probe_scopes=True)
    assert status.ok, status.message  # the lightweight list's 602 is not a revocation here
    assert status.confirmed_scopes == ("CUSTOMER_PERSONAL",) and status.unchecked_scopes == ("INVESTMENTS",)

    conn_id = make_conn("ob_inv", consent_scopes="INVESTMENTS", scopes="ACCOUNT_BASIC INVESTMENTS")
    status = consent_status(OpenBankingHook(conn_id), True, refresh=True, probe_scopes=True)
    assert status.state == "scope_missing" and status.missing_scopes == ("ACCOUNT_BASIC",)


def test_sandbox_rejects_a_bad_idle_days(sandbox):
    for bad in (-1, "29", True):
        with pytest.raises(RuntimeError, match="HTTP 400"):
            sandbox.grant_consent("cust-0001", idle_days=bad)


def test_health_record_and_summary():
    ok = ConsentStatus("a", "ok", message="fine", warnings=("idle for 29 days",))
    bad = ConsentStatus("b", "revoked", message="602")
    records = [
        {**health_record(s, dag_id="d"), "path": f"s3://bkt/lake/consent_health/conn_id={s.conn_id}/x.jsonl"}
        for s in (ok, bad)
    ]
    assert (
        records[0]["healthy"] is True
        and records[0]["summary"] == "a: ok: fine"
        and records[0]["dag_id"] == "d"
    )
    json.dumps(records)
    summary = summarize_health(records, ["a", "b", "c"])
    assert not summary.ok and summary.healthy == ("a",)
    assert summary.unhealthy == (
        "b: revoked: 602",
        "c: no health record: its check task failed (see that task's log)",
    )
    assert summary.warnings == ("a: idle for 29 days",)
    assert summary.failure_message().splitlines() == [
        "2 of 3 Open Banking consent(s) unhealthy (health records landed under s3://bkt/lake/consent_health/):",
        *summary.unhealthy,
    ]
    assert summarize_health(records[0], ["a"]).ok  # one mapped value handed over as is
    assert (
        not summarize_health(None, None).ok
        and "no connection" in summarize_health([], None).failure_message()
    )


def test_log_notifier_renders_the_exception(caplog):
    from airflow.sdk import DAG

    from airflow_provider_openbanking.notifications import LogNotifier

    notifier = LogNotifier(message="{{ dag.dag_id }} failed:\n{{ exception }}")
    with caplog.at_level("ERROR", logger="airflow_provider_openbanking.alerts"):
        notifier({"dag": DAG("health", schedule=None), "exception": ValueError("b: revoked: 602")})
    assert caplog.messages == ["health failed:\nb: revoked: 602"]
