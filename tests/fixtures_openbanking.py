"""Shared fixtures: ``openbanking`` connections bound to fresh sandbox consents.

Registered from the root ``conftest.py``; the ``sandbox`` fixture comes from ``tests/conftest.py``.
Connections are made the way a user would in production: an ``AIRFLOW_CONN_<ID>`` JSON value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_openbanking.hooks.openbanking import clear_token_cache

REDIRECT_URI = "http://127.0.0.1:8976/callback"


def forget_stored_token(conn_id: str) -> None:
    """Delete the token-store Variable of ``conn_id`` (the metadata DB is shared by a session)."""
    from airflow.models import Variable

    Variable.delete(f"openbanking_token__{conn_id}")


def stored_refresh_token(conn_id: str) -> str | None:
    from airflow.models import Variable

    raw = Variable.get(f"openbanking_token__{conn_id}", default_var=None)
    return json.loads(raw)["refresh_token"] if raw else None


MakeConn = Callable[..., str]


@pytest.fixture
def make_conn(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeConn]:
    """Factory: ``make_conn(conn_id="openbanking_default", customer_id=None, consent_scopes=None, **extra)``.

    Grants a consent in the sandbox (unless ``refresh_token=`` is given), puts the connection in
    the environment with fast retry settings, clears that connection's token store, and returns
    the connection id. Every access token cached in the process is dropped afterwards.
    """
    clear_token_cache()

    def make(
        conn_id: str = "openbanking_default",
        *,
        customer_id: str | None = None,
        consent_scopes: Any = None,
        refresh_token: str | None = None,
        login: str = "demo-client",
        password: str = "demo-secret",
        host: str | None = None,
        **extra: Any,
    ) -> str:
        token = (
            refresh_token if refresh_token is not None else sandbox.grant_consent(customer_id, consent_scopes)
        )
        extras = {
            "refresh_token": token,
            "redirect_uri": REDIRECT_URI,
            "provider_id": "1000",
            "retry_initial_wait": 0.05,
            "max_elapsed": 30,
            "rotation_wait": 1.0,
            **extra,
        }
        conn = {
            "conn_type": "openbanking",
            "host": host if host is not None else sandbox.url,
            "login": login,
            "password": password,
            "extra": extras,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        forget_stored_token(conn_id)
        return conn_id

    yield make
    clear_token_cache()


@pytest.fixture
def openbanking_conn(make_conn: MakeConn) -> str:
    """``openbanking_default`` with a consent of the sandbox's first customer (all scopes)."""
    return make_conn()
