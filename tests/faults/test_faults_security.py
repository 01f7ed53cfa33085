"""Security checks: no secret in logs or XComs, TLS verified, callbacks and redirects checked.

- Every log line (all loggers at DEBUG, stdout and stderr) and every XCom value of a full run of
  the main DAG -- refresh tokens rotating, 2-second access tokens, one consent obtained through the
  real authorization-code flow -- and of a failing run (a consent revoked, a refresh token
  rejected, a wrong client secret) contain none of the client secret, the access and refresh
  tokens and authorization codes the sandbox issued, or a full account number.
- TLS certificates are verified unless the connection says ``verify: false`` (or names the CA).
- A callback whose ``state`` is not the one sent to ``/authorize`` is refused before any exchange.
- The sandbox never redirects to a redirect URI that is not registered.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from airflow_provider_openbanking.exceptions import ApiError, AuthorizationCallbackError
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache
from tests.faults.harness import Outcome, conn_json, env_conn, failure_report, log_text, run_main, watch

pytestmark = pytest.mark.faults

CLIENT_SECRET = "demo-secret"
WRONG_SECRET = "not-the-client-secret-42"


def _authorize(url: str) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=10)


def _secrets(sandbox: Any, *extra: str) -> dict[str, str]:
    """Every secret of the sandbox's session, by a name that says what it is (never printed)."""
    found = {f"client secret {i}": s for i, s in enumerate((CLIENT_SECRET, *extra))}
    for kind, values in sandbox.issued_secrets().items():
        found.update({f"{kind} #{i}": v for i, v in enumerate(values)})
    for customer in ("cust-0001", "cust-0002", "cust-0003"):
        for account in sandbox.truth_accounts(customer):
            if account.get("accountNumber"):
                found[f"account number of {account['accountId']}"] = account["accountNumber"]
    return found


def _haystack(outcome: Outcome, log: str) -> str:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rtif
    from airflow.utils.session import create_session

    with create_session() as session:
        rendered = [
            json.dumps(r.rendered_fields, default=str)
            for r in session.query(Rtif).filter(Rtif.run_id == outcome.dagrun.run_id)
        ]
    xcoms = [json.dumps(value, default=str) for *_, value in outcome.xcoms]
    return "\n".join([log, *xcoms, *rendered])


def _assert_no_secret(secrets: dict[str, str], haystack: str) -> None:
    leaked = sorted(name for name, value in secrets.items() if value and value in haystack)
    assert not leaked, f"leaked: {leaked}"  # names only: the values stay out of the report


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def test_a_full_run_leaks_no_secret(fsb, consent, main_dag, env, monkeypatch, capfd, debug_logs):
    fsb.configure(rotate_refresh_tokens=True, refresh_grace_seconds=0, access_token_ttl=2)
    # A token dies at a second page of transactions: the 401, refresh and replay path is part of
    # the run whose output is searched for secrets (2 s tokens may add more such 401s).
    fsb.inject({"kind": "expire_token", "path": "/transactions", "with_offset": True})
    # ob_a: a consent given through the browser flow (authorize, callback, code exchange).
    monkeypatch.setenv("AIRFLOW_CONN_OB_A", conn_json(fsb.url, ""))
    hook = OpenBankingHook("ob_a")
    code = hook.parse_callback(_authorize(hook.authorization_url("st-1")).headers["Location"], "st-1")
    hook.exchange_code(code)
    hook.close()
    clear_token_cache()
    conns = ["ob_a", consent("ob_b")]

    outcome = run_main(main_dag, env, conns)

    log = log_text(capfd, debug_logs)
    assert outcome.ok, failure_report(outcome, log)
    secrets = _secrets(fsb)
    assert code in secrets.values() and sum(k.startswith("refresh_tokens") for k in secrets) >= 4
    assert fsb.counters()["faults_injected"] == 1
    assert (
        "Refresh token rotated" in log
        and "access token refused (HTTP 401); refreshed it and replaying" in log
    )
    _assert_no_secret(secrets, _haystack(outcome, log))
    # Landed accounts carry masked numbers only.
    numbers = {k: v for k, v in secrets.items() if k.startswith("account number")}
    _assert_no_secret(numbers, "\n".join(data.decode() for data in outcome.files.values()))


def test_a_failing_run_leaks_no_secret(fsb, consent, main_dag, env, monkeypatch, capfd, debug_logs):
    conns = [consent("ob_a"), consent("ob_b"), consent("ob_c", password=WRONG_SECRET)]
    token = {c: env_conn(c)["extra"]["refresh_token"] for c in conns}
    fsb.inject({"kind": "status", "status": 429, "retry_after": 0.5, "path": "/transactions"})
    fsb.inject({"kind": "html", "status": 502, "path": "/api/v1/token"})

    def lose_consents() -> None:
        fsb.revoke_consent(refresh_token=token["ob_a"])
        fsb.revoke_consent(refresh_token=token["ob_b"])
        fsb.expire_access_tokens(customer_id="cust-0002")

    with watch(lambda: fsb.counters()["faults_injected"] >= 2, lose_consents):
        outcome = run_main(main_dag, env, conns)

    assert outcome.failed
    log = log_text(capfd, debug_logs)
    assert "code 602" in log and "refresh token was rejected" in log and "were rejected by" in log
    _assert_no_secret(_secrets(fsb, WRONG_SECRET), _haystack(outcome, log))


# ---- TLS ------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class _Api(http.server.BaseHTTPRequestHandler):
    """A stand-in token endpoint and provider list behind TLS."""

    def _json(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._json({"access_token": "tls-test-access-token", "token_type": "Bearer", "expires_in": 300})

    def do_GET(self) -> None:
        self._json([{"id": "1000", "name": "TLS Bank", "status": "ACTIVE"}])

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("verify", "trusted"),
    [(None, False), ("true", False), ("cert", True), (False, True), ("false", True)],
    ids=["default", "true", "ca-bundle", "false", "false-string"],
)
def test_tls_is_verified_unless_the_connection_says_otherwise(tls_api, monkeypatch, verify, trusted):
    url, cert = tls_api
    extra = {} if verify is None else {"verify": str(cert) if verify == "cert" else verify}
    monkeypatch.setenv("AIRFLOW_CONN_OB_TLS", conn_json(url, "unused-refresh-token", max_attempts=6, **extra))
    hook = OpenBankingHook("ob_tls")
    if trusted:
        assert hook.get_providers()[0]["name"] == "TLS Bank"
        return
    assert hook.transport.verify is True
    with pytest.raises(ApiError) as err:
        hook.get_providers()
    text = str(err.value)
    assert "certificate verify failed" in text and "verify" in (err.value.hint or "")
    assert not getattr(err.value, "retry_after", None)
    assert "retrying" not in text


# ---- OAuth callbacks and redirects ----------------------------------------------------------


def _with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def test_a_callback_with_the_wrong_state_is_refused(fsb, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OB_CB", conn_json(fsb.url, ""))
    hook = OpenBankingHook("ob_cb")
    location = _authorize(hook.authorization_url("expected-state")).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    forged = {
        "another state": [("code", code), ("state", "forged")],
        "no state": [("code", code)],
        "empty state": [("code", code), ("state", "")],
        "state twice, forged first": [("code", code), ("state", "forged"), ("state", "expected-state")],
        "state prefix": [("code", code), ("state", "expected-state-and-more")],
        "error with another state": [("error", "access_denied"), ("state", "forged")],
    }
    for name, pairs in forged.items():
        with pytest.raises(AuthorizationCallbackError, match="state does not match") as err:
            hook.parse_callback(_with_query(location, pairs), "expected-state")
        assert code not in str(err.value), name
    assert fsb.counters()["token_grants"]["authorization_code"] == 0, "no forged callback was exchanged"
    # The genuine callback still works: the code was not burnt by the refusals.
    assert hook.parse_callback(location, "expected-state") == code
    assert hook.exchange_code(code)["access_token"]


def test_the_sandbox_never_redirects_to_an_unregistered_uri(fsb):
    registered = "https://partner.example.com/callback"
    fsb.register_client("partner", "partner-secret", [registered])
    refused = {
        "demo-client": [
            "https://evil.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "http://127.0.0.1:8976@evil.example/cb",
            "http://localhost.evil.example:8976/cb",
            "http://evil.example/cb?next=http://127.0.0.1:8976/cb",
            "http://127.0.0.1:8976/cb#fragment",
            "//127.0.0.1:8976/cb",
            "javascript:alert(1)",
            "",
        ],
        "partner": [
            registered + "/",
            registered + "?x=1",
            registered.replace("https", "http"),
            registered.replace("partner.example.com", "partner.example.com:8443"),
            "https://partner.example.com/callback/../callback",
            "https://partner.example.com.evil.example/callback",
        ],
    }
    for client_id, uris in refused.items():
        for uri in uris:
            for scope in ("ACCOUNT_BASIC", "NOT_A_SCOPE"):  # even an error is not sent there
                query = {"response_type": "code", "client_id": client_id, "redirect_uri": uri}
                resp = requests.get(
                    f"{fsb.url}/api/v1/authorize",
                    params={**query, "scope": scope, "state": "s"},
                    allow_redirects=False,
                    timeout=10,
                )
                assert resp.status_code == 400, (client_id, uri, resp.status_code)
                assert "location" not in resp.headers and "code=" not in resp.text, (client_id, uri)
    assert fsb.issued_secrets()["codes"] == []
    # The registered URIs are accepted (the refusals above are not a server that refuses all).
    for client_id, uri in (("partner", registered), ("demo-client", "http://127.0.0.1:8976/cb")):
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": uri,
            "scope": "ACCOUNT_BASIC",
        }
        resp = requests.get(f"{fsb.url}/api/v1/authorize", params=query, allow_redirects=False, timeout=10)
        assert resp.status_code == 302 and resp.headers["location"].startswith(uri + "?code=")
