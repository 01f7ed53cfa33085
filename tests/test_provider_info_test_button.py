"""The UI's Test button (``[core] test_connection = Enabled``) judges the tested connection's consent.

Airflow's ``POST /api/v2/connections/test`` copies the form's connection to a random transient id
and tests that copy; its token store is empty. This goes through Airflow's real API app (FastAPI
test client, simple auth manager with everyone admin) against the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_openbanking.token_store import TokenRecord, VariableTokenStore, now_iso


@pytest.fixture(scope="module")
def api_client() -> Iterator[Any]:
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as client:
        yield client
    mp.undo()


def _form(conn_id: str, sandbox: Any, **extra: Any) -> dict[str, Any]:
    """What the connection form sends when Test is clicked."""
    return {
        "connection_id": conn_id,
        "conn_type": "openbanking",
        "host": sandbox.url,
        "login": "demo-client",
        "password": "demo-secret",
        "extra": json.dumps({"provider_id": "1000", **extra}),
    }


def test_test_button_judges_the_stored_consent_of_the_tested_connection(api_client, make_conn, sandbox):
    # A consent stored by `airflow-openbanking authorize` (token store), none in the connection.
    conn_id = make_conn("ob_ui_tested", refresh_token="")
    refresh = sandbox.grant_consent("cust-0001")
    VariableTokenStore().save(
        conn_id, TokenRecord(refresh_token=refresh, origin=None, last_refresh_at=now_iso())
    )

    response = api_client.post("/api/v2/connections/test", json=_form(conn_id, sandbox))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] is True
    assert "Client credentials OK (3 data provider(s)); customer consent OK" in body["message"]


def test_test_button_without_consent_says_so(api_client, make_conn, sandbox):
    conn_id = make_conn("ob_ui_no_consent", refresh_token="")
    response = api_client.post("/api/v2/connections/test", json=_form(conn_id, sandbox))
    assert response.json() == {
        "status": True,
        "message": "Client credentials OK (3 data provider(s)); no customer consent yet "
        "(run `airflow-openbanking authorize`)",
    }


def test_test_button_reports_a_bad_field(api_client, make_conn, sandbox):
    conn_id = make_conn("ob_ui_bad")
    response = api_client.post("/api/v2/connections/test", json=_form(conn_id, sandbox, timeout="soon"))
    body = response.json()
    assert body["status"] is False
    assert "field 'timeout' must be a number, got 'soon'" in body["message"]
