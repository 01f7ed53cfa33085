"""Typos are named, noise is not logged (issue 15, items 6 and 7)."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from airflow.sdk import DAG

from airflow_provider_openbanking import connection
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
from airflow_provider_openbanking.operators.openbanking import OpenBankingAccountsOperator
from tests.faults.harness import log_text
from tests.operators.dagrun_helpers import run_dag

pytestmark = pytest.mark.faults
UTC = dt.timezone.utc


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "_warned_unknown", set())


def test_typos_in_extras_warn_naming_the_closest_key_once(make_conn, sandbox, caplog, fresh_warnings):
    conn_id = make_conn(
        "ob_typos", **{"redirect_url": "https://example.com/cb", "page-size": 5, "colour": "x"}
    )
    caplog.set_level(logging.WARNING, logger="airflow_provider_openbanking.connection")
    for _ in range(2):  # a second hook of the same connection does not repeat the warnings
        assert OpenBankingHook(conn_id).config.page_size is None, "the typo is ignored, not guessed"
    warnings = [r.getMessage() for r in caplog.records if r.name == "airflow_provider_openbanking.connection"]
    assert warnings[:2] == [
        "Connection 'ob_typos': unknown extra 'redirect_url' is ignored; did you mean 'redirect_uri'?",
        "Connection 'ob_typos': unknown extra 'page-size' is ignored; did you mean 'page_size'?",
    ]
    assert warnings[2].startswith("Connection 'ob_typos': unknown extra 'colour' is ignored; known extras: ")
    assert len(warnings) == 3


def test_known_extras_do_not_warn(make_conn, sandbox, caplog, fresh_warnings):
    extras = dict.fromkeys(
        ("max_pages", "consent_store", "consent_store_conn_id", "max_requests_per_second", "use_pkce")
    )
    conn_id = make_conn("ob_known", **extras, extra__openbanking__scopes="ACCOUNT_BASIC")
    caplog.set_level(logging.WARNING, logger="airflow_provider_openbanking.connection")
    OpenBankingHook(conn_id).config  # noqa: B018 - parse it
    assert not [r for r in caplog.records if r.name == "airflow_provider_openbanking.connection"]


def test_a_task_log_has_no_masking_noise_about_provider_id(
    make_conn, sandbox, tmp_path, capfd, caplog, monkeypatch
):
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker

    monkeypatch.setattr(SecretsMasker, "_has_warned_short_secret", False)  # once per process
    conn_id = make_conn("ob_quiet")  # provider_id "1000": four characters, and no secret
    with DAG("ob_quiet", schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=UTC)) as dag:
        OpenBankingAccountsOperator(
            task_id="accounts", openbanking_conn_id=conn_id, destination=str(tmp_path)
        )
    result = run_dag(dag, dt.datetime(2026, 11, 17, tzinfo=UTC))
    assert result.states == {"accounts": "success"}
    log = log_text(capfd, caplog)
    assert "too short" not in log


def test_a_short_real_secret_is_named(make_conn, sandbox, caplog):
    conn_id = make_conn("ob_short_secret", password="abc")
    caplog.set_level(logging.WARNING, logger="airflow_provider_openbanking.hooks.openbanking")
    OpenBankingHook(conn_id).config  # noqa: B018
    assert any(
        "Connection 'ob_short_secret': password is shorter than 5 characters" in r.getMessage()
        for r in caplog.records
    )


def test_the_cli_silences_both_maskers(caplog):
    from airflow._shared.secrets_masker.secrets_masker import SecretsMasker as CoreMasker
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker as SdkMasker

    from airflow_provider_openbanking.cli import _quiet_logs

    caplog.set_level(logging.WARNING)
    for masker in (CoreMasker, SdkMasker):
        masker._has_warned_short_secret = False
        with _quiet_logs(False):
            masker().add_mask({"provider_id": "1000"})
        assert masker._has_warned_short_secret, "the masker did warn (and the CLI kept it quiet)"
    assert "too short" not in caplog.text
