"""Helpers for the sandbox's own tests: a small HTTP client bound to the session sandbox."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from airflow_provider_openbanking.sandbox.testing import SandboxServer

FDX = "/api/fdx/5"
REDIRECT = "http://127.0.0.1:8976/callback"
ALL_SCOPES = (
    "ACCOUNT_BASIC ACCOUNT_DETAILED ACCOUNT_PAYMENTS INVESTMENTS TRANSACTIONS STATEMENTS "
    "CUSTOMER_CONTACT CUSTOMER_PERSONAL"
)


class Api:
    FDX = FDX
    REDIRECT = REDIRECT
    ALL_SCOPES = ALL_SCOPES

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.url = server.url
        self.http = requests.Session()
        self.http.trust_env = False

    def token(self, **body: Any) -> requests.Response:
        body.setdefault("client_id", "demo-client")
        body.setdefault("client_secret", "demo-secret")
        return self.http.post(f"{self.url}/api/v1/token", json=body, timeout=30)

    def refresh(self, refresh_token: str) -> requests.Response:
        return self.token(grant_type="refresh_token", refresh_token=refresh_token)

    def customer_token(self, customer_id: str | None = None, scopes: Any = None) -> str:
        refresh = self.server.grant_consent(customer_id, scopes)
        resp = self.refresh(refresh)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    @staticmethod
    def unwrap(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ((kind, inner),) = item.items()
        return kind, inner

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("http") else f"{self.url}{path}"
        return self.http.get(url, headers=headers, timeout=60, **kwargs)

    def fdx(self, path: str, token: str, **kwargs: Any) -> requests.Response:
        return self.get(FDX + path, token, **kwargs)

    def authorize(self, **params: Any) -> requests.Response:
        query = {
            "response_type": "code",
            "client_id": "demo-client",
            "redirect_uri": REDIRECT,
            "scope": ALL_SCOPES,
            "state": "st-123",
            "provider_id": "1000",
            "correlation_id": "fce84d61-dfa8-4e2b-bd94-f1ec6a445841",
        }
        query.update(params)
        query = {k: v for k, v in query.items() if v is not None}
        return self.http.get(f"{self.url}/api/v1/authorize", params=query, allow_redirects=False, timeout=30)

    def all_pages(self, path: str, token: str, key: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
        """Follow page.nextOffset; return the items and the number of pages."""
        items: list[dict[str, Any]] = []
        pages = 0
        while True:
            resp = self.fdx(path, token, params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            pages += 1
            items.extend(body[key])
            nxt = body["page"].get("nextOffset")
            if not nxt:
                return items, pages
            params = {**params, "offset": nxt}


@pytest.fixture
def api(sandbox: SandboxServer) -> Api:
    return Api(sandbox)
