"""Two consents of one connection never see each other's access token, refresh token or data.

One ``openbanking`` connection (one client), three consents: ``default`` (the connection's own
``refresh_token`` extra, customer 3) and two imported ones (customers 1 and 2), in the default
Variable store. Each hook acts for its consent only; the sandbox tells which customer a token
belongs to by the data it returns.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_openbanking.consents import ConsentRecord, VariableConsentStore
from airflow_provider_openbanking.hooks import openbanking as hook_module
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache


def _ids(accounts: Any) -> set[str]:
    return {a["accountId"] for a in accounts}


def test_two_consents_share_nothing_but_the_client(make_conn: Any, sandbox: Any) -> None:
    sandbox.configure(rotate_refresh_tokens=True, refresh_grace_seconds=0)
    conn_id = make_conn("ob_iso", customer_id="cust-0003")
    store = VariableConsentStore()
    tokens = {"alice": sandbox.grant_consent("cust-0001"), "bob": sandbox.grant_consent("cust-0002")}
    for consent, token in tokens.items():
        store.save(ConsentRecord(conn_id, consent, refresh_token=token))

    hook = OpenBankingHook(conn_id)
    alice, bob = hook.for_consent("alice"), OpenBankingHook(conn_id, consent_id="bob")
    assert hook.consent_ids() == ["alice", "bob", "default"]
    assert alice.transport is hook.transport and alice.consent_store is hook.consent_store

    data = {name: _ids(h.iter_accounts()) for name, h in (("alice", alice), ("bob", bob), ("default", hook))}
    truth = {
        "alice": _ids(sandbox.truth_accounts("cust-0001")),
        "bob": _ids(sandbox.truth_accounts("cust-0002")),
        "default": _ids(sandbox.truth_accounts("cust-0003")),
    }
    assert data == truth and not (truth["alice"] & truth["bob"])

    access = {name: h.get_access_token() for name, h in (("alice", alice), ("bob", bob), ("default", hook))}
    assert len(set(access.values())) == 3
    keys = {h._customer_tokens.key for h in (alice, bob, hook)}
    assert len(keys) == 3 and len({k for k in hook_module._CACHE if k.startswith("customer|ob_iso|")}) == 3

    # rotation: each consent's new refresh token lands in its own record only
    stored = {c: store.load(conn_id, c) for c in ("alice", "bob", "default")}
    refresh = {c: r.refresh_token for c, r in stored.items() if r is not None}
    assert len(set(refresh.values())) == 3 and refresh["alice"] != tokens["alice"]
    assert {c: r.access_token for c, r in stored.items() if r is not None} == access

    # a new process: each consent gets its own access token back from the store, no grant
    grants = sandbox.counters()["token_grants"]["refresh_token"]
    clear_token_cache()
    again = {c: OpenBankingHook(conn_id, c).get_access_token() for c in ("alice", "bob", "default")}
    assert again == access and sandbox.counters()["token_grants"]["refresh_token"] == grants

    # one consent revoked: the other two are untouched
    sandbox.revoke_consent(customer_id="cust-0001")
    OpenBankingHook(conn_id, "alice").revoke()
    assert store.load(conn_id, "alice").state == "revoked"  # type: ignore[union-attr]
    assert _ids(OpenBankingHook(conn_id, "bob").iter_accounts()) == truth["bob"]
    assert store.load(conn_id, "bob").refresh_token == refresh["bob"]  # type: ignore[union-attr]


def test_an_unknown_consent_is_a_clear_non_retryable_error(make_conn: Any) -> None:
    import pytest
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_openbanking.exceptions import ConsentRequiredError

    conn_id = make_conn("ob_iso2")
    with pytest.raises(ConsentRequiredError) as err:
        list(OpenBankingHook(conn_id, "nobody").iter_accounts())
    assert isinstance(err.value, AirflowFailException)
    assert "no consent 'nobody'" in str(err.value) and "consents import --conn-id ob_iso2" in str(err.value)
    with pytest.raises(ValueError, match="consent_id"):
        OpenBankingHook(conn_id, "bad id/with slash")


def test_record_success_and_error_stamp_only_their_consent(make_conn: Any, sandbox: Any) -> None:
    conn_id = make_conn("ob_iso3")
    store = VariableConsentStore()
    store.save(ConsentRecord(conn_id, "k1", refresh_token=sandbox.grant_consent("cust-0001")))
    store.save(ConsentRecord(conn_id, "k2", refresh_token=sandbox.grant_consent("cust-0002")))
    hook = OpenBankingHook(conn_id, "k1")
    hook.record_success()
    hook.for_consent("k2").record_error("602")
    k1, k2 = store.load(conn_id, "k1"), store.load(conn_id, "k2")
    assert k1 is not None and k1.last_success_at and k1.last_error is None
    assert k2 is not None and k2.last_error == "602" and k2.last_success_at is None
    # the default consent (only in the connection so far) gets a record of its own
    OpenBankingHook(conn_id).record_success()
    default = store.load(conn_id, "default")
    assert default is not None and default.last_success_at
