"""Bad settings: connection fields missing or malformed, operator arguments wrong.

A bad connection fails its consent's sensor at once (waiting cannot fix a typo) with a message
naming the connection and the field, and the other consents go on; a wrong operator argument is
refused when the DAG is parsed if it is literal, and at run time, before any request and any
write, if it is templated.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountsOperator,
    OpenBankingTransactionsOperator,
)
from tests.faults.harness import env_conn, log_text, only, only_files, run_main

pytestmark = pytest.mark.faults

#: conn_id -> (change to a good connection, message expected in the task's failure)
BAD_CONNECTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "ob_no_host": ({"host": ""}, "Connection 'ob_no_host': field 'host' is empty"),
    "ob_ftp_host": (
        {"host": "ftp://bank.example"},
        "Connection 'ob_ftp_host': field 'host' must be an http(s) URL",
    ),
    "ob_no_secret": (
        {"password": ""},
        "Connection 'ob_no_secret': field 'password' (Client secret) is empty",
    ),
    "ob_wrong_secret": (
        {"password": "not-the-secret"},
        "Connection 'ob_wrong_secret': field 'login/password' were rejected by POST /api/v1/token",
    ),
    "ob_wrong_type": ({"conn_type": "http"}, "Connection 'ob_wrong_type': field 'conn_type' is 'http'"),
    "ob_extra_not_json": (
        {"extra": "{refresh_token: x"},
        "Connection 'ob_extra_not_json': field 'extra' is not valid JSON",
    ),
    "ob_page_size": (
        {"extra": {"page_size": "ten"}},
        "Connection 'ob_page_size': field 'page_size' must be a whole number",
    ),
    "ob_scopes": (
        {"extra": {"scopes": "ACCOUNT_BASIC EVERYTHING"}},
        "Connection 'ob_scopes': field 'scopes' has unknown scope(s) EVERYTHING",
    ),
    "ob_token_path": (
        {"extra": {"token_path": "api/v1/token"}},
        "Connection 'ob_token_path': field 'token_path' must be a path starting with '/'",
    ),
    "ob_redirect": (
        {"extra": {"redirect_uri": "callback"}},
        "Connection 'ob_redirect': field 'redirect_uri' must be an absolute http(s) URL",
    ),
}


def test_bad_connections_fail_their_consent_at_once(
    fsb, consent, main_dag, env, baseline, monkeypatch, capfd, caplog
):
    conns = [consent("ob_a")]
    for conn_id, (change, _) in BAD_CONNECTIONS.items():
        consent(conn_id, "cust-0002")
        conn = env_conn(conn_id)
        extra = change.pop("extra", None) if isinstance(change.get("extra"), dict) else None
        conn.update(change)
        if extra:
            conn["extra"] = {**conn["extra"], **extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        conns.append(conn_id)

    outcome = run_main(main_dag, env, conns)

    assert outcome.failed
    assert outcome.states[("shard.land_accounts", 0)] == "success"
    for index in range(1, len(conns)):  # one shard per connection, failed at its first try
        assert outcome.states[("shard.land_accounts", index)] == "failed", conns[index]
        assert outcome.tries[("shard.land_accounts", index)] == 1, conns[index]
    assert set(outcome.transactions().values()) == {"success"}
    assert outcome.state_of("load_transactions") == "success"
    assert outcome.table == only(["ob_a"], baseline.table)
    assert outcome.files == only_files(["ob_a"], baseline.files)
    log = log_text(capfd, caplog)
    for conn_id, (_, message) in BAD_CONNECTIONS.items():
        assert message in log, conn_id
    assert "Timed out" not in log  # none of them was waited for


def test_wrong_operator_arguments_are_refused_before_any_request(fsb, consent, tmp_path, capfd, caplog):
    from airflow.sdk import DAG

    from tests.operators.dagrun_helpers import run_dag

    with pytest.raises(ValueError, match="result_type must be 'lightweight' or 'details', got 'everything'"):
        OpenBankingAccountsOperator(task_id="accounts", result_type="everything")
    with pytest.raises(ValueError, match="start_time 2026-11-20T00:00:00\\+00:00 is after end_time"):
        OpenBankingTransactionsOperator(task_id="txns", start_time="2026-11-20", end_time="2026-11-10")
    with pytest.raises(ValueError, match="start_time='last week' is not an ISO date"):
        OpenBankingTransactionsOperator(task_id="txns", start_time="last week", end_time="2026-11-10")

    # Templated arguments can only be checked once rendered, at run time.
    conn_id = consent("ob_a")
    dest = tmp_path / "landing"
    with DAG(
        "ob_fault_bad_arguments",
        schedule=None,
        start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
        params={"kind": "everything", "start": "2026-11-20", "end": "2026-11-10"},
    ) as dag:
        OpenBankingAccountsOperator(
            task_id="accounts",
            openbanking_conn_id=conn_id,
            result_type="{{ params.kind }}",
            destination=str(dest),
        )
        OpenBankingTransactionsOperator(
            task_id="transactions",
            openbanking_conn_id=conn_id,
            start_time="{{ params.start }}",
            end_time="{{ params.end }}",
            destination=str(dest),
        )
    result = run_dag(dag, dt.datetime(2026, 11, 17, tzinfo=dt.timezone.utc))

    assert result.states == {"accounts": "failed", "transactions": "failed"}
    assert fsb.counters()["requests"] == {}, "no request was sent"
    assert not dest.exists(), "nothing was written"
    log = log_text(capfd, caplog)
    assert "result_type must be 'lightweight' or 'details', got 'everything'" in log
    assert "start_time 2026-11-20T00:00:00+00:00 is after end_time 2026-11-10T00:00:00+00:00" in log
