"""``consent_status``: every state, against the sandbox, never raising for expected failures."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from airflow_provider_openbanking import consent as consent_module
from airflow_provider_openbanking.consent import ConsentStatus, consent_status, days_until_idle_lapse
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache
from airflow_provider_openbanking.token_store import TokenRecord, fingerprint
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
    assert status.state == "refresh_rejected" and status.needs_authorization
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
    record = TokenRecord(token, origin=fingerprint(token), updated_at=old, last_refresh_at=old)
    hook.token_store.save(openbanking_conn, record)
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
