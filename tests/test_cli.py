"""``airflow-openbanking`` against the sandbox: the whole consent flow, with the test as the browser.

The CLI runs in-process (``cli.main`` with its own stdin/stdout/stderr) except in the subprocess
tests; a thread plays the customer's browser: it reads the authorize URL the CLI printed, GETs it
(and, in ``prompt`` mode, submits the sandbox's HTML consent form), then delivers the redirect to
the CLI's loopback listener or pastes it into the CLI's stdin.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests

from airflow_provider_openbanking import cli
from airflow_provider_openbanking.hooks import openbanking as hook_module
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache
from tests.fixtures_openbanking import stored_refresh_token

LOOPBACK_ANY_PORT = "http://127.0.0.1:0/callback"
WEB_REDIRECT = "https://app.example.com/openbanking/callback"
AUTHORIZE_URL = re.compile(r"http://127\.0\.0\.1:\d+/api/v1/authorize\?\S+")


class SyncOut(io.StringIO):
    """A StringIO another thread can read while the CLI writes to it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            return super().write(s)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.buttons: dict[str, str] = {}
        self.selects: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a.get("action")
        elif tag == "input" and a.get("type") == "hidden":
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "button":
            self.buttons[a.get("value", "")] = a.get("name", "")
        elif tag == "select":
            self.selects.append(a.get("name", ""))


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit((*parts[:3], urlencode(query), parts[4]))


class Browser(threading.Thread):
    """The customer's browser: follow the printed URL, approve/deny, deliver the redirect."""

    def __init__(
        self,
        out: SyncOut,
        *,
        decision: str = "approve",
        customer_id: str | None = None,
        tamper: Callable[[str], str] | None = None,
        paste_to: Any = None,
    ) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.decision = decision
        self.customer_id = customer_id
        self.tamper = tamper
        self.paste_to = paste_to
        self.authorize_url = ""
        self.consent_page = ""
        self.form = _Form()
        self.callback = ""
        self.landing: requests.Response | None = None
        self.error: BaseException | None = None
        self.http = requests.Session()
        self.http.trust_env = False

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 15
            while not (found := AUTHORIZE_URL.search(self.out.text())):
                if time.monotonic() > deadline:
                    raise TimeoutError("the CLI printed no authorize URL")
                time.sleep(0.02)
            self.authorize_url = found.group(0)
            resp = self.http.get(self.authorize_url, allow_redirects=False, timeout=10)
            if resp.status_code == 200:  # consent_mode=prompt: a real HTML page
                self.consent_page = resp.text
                self.form.feed(resp.text)
                data = {**self.form.hidden, "decision": self.decision}
                if self.customer_id:
                    data["customer_id"] = self.customer_id
                action = urljoin(self.authorize_url, self.form.action or "")
                resp = self.http.post(action, data=data, allow_redirects=False, timeout=10)
            assert resp.status_code in (302, 303), (resp.status_code, resp.text[:300])
            callback = resp.headers["Location"]
            if self.tamper is not None:
                callback = self.tamper(callback)
            self.callback = callback
            if self.paste_to is not None:
                self.paste_to.write(callback + "\n")
                self.paste_to.flush()
            else:
                self.landing = self.http.get(callback, timeout=10)
        except BaseException as exc:
            self.error = exc

    def code(self) -> str:
        return parse_qs(urlsplit(self.callback).query)["code"][0]


def run_cli(*argv: str, stdin: Any = None, out: SyncOut | None = None) -> tuple[int, str, str]:
    out = out or SyncOut()
    err = io.StringIO()
    rc = cli.main(list(argv), stdin=stdin or io.StringIO(""), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def authorize(*argv: str, browser_kwargs: dict[str, Any] | None = None) -> tuple[int, str, str, Browser]:
    """``authorize --no-browser`` with a Browser thread delivering the redirect to the listener."""
    out = SyncOut()
    browser = Browser(out, **(browser_kwargs or {}))
    browser.start()
    rc, stdout, stderr = run_cli("authorize", "--no-browser", "--timeout", "15", *argv, out=out)
    browser.join(10)
    assert browser.error is None, browser.error
    return rc, stdout, stderr, browser


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.fixture(autouse=True)
def _never_open_a_browser(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    monkeypatch.setattr(cli, "open_browser", lambda url: opened.append(url) or True)
    return opened


@pytest.fixture(autouse=True)
def _fast_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected refresh token makes the hook wait up to 5 s for another worker's rotation;
    nothing rotates here, so cut that wait short (test speed only)."""
    original = OpenBankingHook._wait_for_newer_refresh_token

    def quick(self: OpenBankingHook, tried: set[str], deadline: float, *args: Any) -> Any:
        return original(self, tried, min(deadline, time.monotonic() + 0.2), *args)

    monkeypatch.setattr(OpenBankingHook, "_wait_for_newer_refresh_token", quick)


@pytest.fixture
def fresh_conn(make_conn: Any) -> str:
    """A connection with no consent yet, redirecting to any free loopback port."""
    return make_conn(refresh_token="", redirect_uri=LOOPBACK_ANY_PORT)


def _next_run_accounts(conn_id: str) -> tuple[str, int]:
    """What a new task process does: a fresh hook, no cached access token, the stored consent."""
    clear_token_cache()
    hook = OpenBankingHook(conn_id)
    return hook.current_refresh_token(), sum(1 for _ in hook.iter_accounts())


# -- authorize: approve --------------------------------------------------------------------------


def test_authorize_loopback_approve_stores_consent_for_next_run(fresh_conn, sandbox):
    rc, out, err, browser = authorize()
    assert rc == 0, err
    assert "Verified: a fresh hook read the stored consent, refreshed it and listed 6 account(s)" in out
    assert "Authorization received" in browser.landing.text

    query = parse_qs(urlsplit(browser.authorize_url).query)
    assert query["response_type"] == ["code"] and query["client_id"] == ["demo-client"]
    assert query["provider_id"] == ["1000"]
    assert len(query["scope"][0].split()) == 8
    assert len(query["state"][0]) >= 32
    assert re.fullmatch(r"[0-9a-f-]{36}", query["correlation_id"][0])
    assert "code_challenge" not in query
    redirect = urlsplit(query["redirect_uri"][0])
    assert redirect.hostname == "127.0.0.1" and redirect.port and redirect.path == "/callback"

    token = stored_refresh_token(fresh_conn)
    assert token
    for secret in (token, browser.code(), *(t.token for t in hook_module._CACHE.values())):
        assert secret not in out and secret not in err
    assert sandbox.counters()["token_grants"]["authorization_code"] == 1

    # the next DAG run: a new process (empty cache) reads the stored consent
    assert _next_run_accounts(fresh_conn) == (token, 6)


def test_each_authorize_uses_fresh_state_and_correlation_id(fresh_conn, sandbox):
    _, _, _, first = authorize()
    _, _, _, second = authorize()
    q1, q2 = (parse_qs(urlsplit(b.authorize_url).query) for b in (first, second))
    assert q1["state"] != q2["state"] and q1["correlation_id"] != q2["correlation_id"]


def test_reauthorize_replaces_a_dead_consent_held_by_the_connection(make_conn, sandbox):
    conn_id = make_conn(redirect_uri=LOOPBACK_ANY_PORT)  # the connection holds a refresh token...
    sandbox.revoke_consent(customer_id="cust-0001")  # ...which the customer then revoked
    assert run_cli("status", "--conn-id", conn_id)[0] == cli.EXIT_NO_CONSENT

    rc, out, err, _ = authorize("--conn-id", conn_id)
    assert rc == 0, err
    assert "connection still holds an older refresh_token" in out
    token, accounts = _next_run_accounts(conn_id)
    assert token == stored_refresh_token(conn_id) and accounts == 6
    assert run_cli("status", "--conn-id", conn_id)[0] == 0


def test_authorize_show_token_prints_the_refresh_token(fresh_conn):
    rc, out, err, _ = authorize("--show-token")
    assert rc == 0, err
    token = stored_refresh_token(fresh_conn)
    assert f"refresh_token: {token}" in out.splitlines()


@pytest.mark.parametrize(
    ("extra", "argv", "expected"),
    [
        ({"use_pkce": True}, (), True),
        ({"use_pkce": True}, ("--no-pkce",), False),
        ({}, ("--pkce",), True),
    ],
)
def test_pkce_follows_the_connection_unless_overridden(make_conn, extra, argv, expected):
    make_conn(refresh_token="", redirect_uri=LOOPBACK_ANY_PORT, **extra)
    rc, out, err, browser = authorize(*argv)
    assert rc == 0, err
    query = parse_qs(urlsplit(browser.authorize_url).query)
    assert ("code_challenge" in query) is expected
    if expected:
        assert query["code_challenge_method"] == ["S256"] and "PKCE S256" in out


def test_scopes_and_provider_options(fresh_conn, sandbox):
    rc, out, err, browser = authorize("--scopes", "ACCOUNT_BASIC,TRANSACTIONS", "--provider-id", "1001")
    assert rc == 0, err
    query = parse_qs(urlsplit(browser.authorize_url).query)
    assert query["scope"] == ["ACCOUNT_BASIC TRANSACTIONS"] and query["provider_id"] == ["1001"]
    assert "Granted scopes: ACCOUNT_BASIC TRANSACTIONS" in out


def test_browser_is_opened_only_with_a_display_and_without_no_browser(
    fresh_conn, monkeypatch, _never_open_a_browser
):
    monkeypatch.setenv("DISPLAY", ":0")
    assert authorize()[0] == 0  # authorize() passes --no-browser
    assert _never_open_a_browser == []

    out = SyncOut()
    browser = Browser(out)
    browser.start()
    rc, stdout, _ = run_cli("authorize", "--timeout", "15", out=out)
    browser.join(10)
    assert rc == 0 and _never_open_a_browser == [browser.authorize_url]
    assert "(opened in your browser)" in stdout


# -- authorize: the consent page in prompt mode ---------------------------------------------------


def test_prompt_mode_consent_page_approve_as_another_customer(fresh_conn, sandbox):
    sandbox.configure(consent_mode="prompt")
    rc, _, err, browser = authorize(browser_kwargs={"customer_id": "cust-0002"})
    assert rc == 0, err
    assert browser.consent_page.lstrip().lower().startswith("<!doctype html>")
    assert set(browser.form.buttons) == {"approve", "deny"} and "customer_id" in browser.form.selects
    truth = {a["accountId"] for a in sandbox.truth_accounts("cust-0002")}
    clear_token_cache()
    assert {a["accountId"] for a in OpenBankingHook(fresh_conn).iter_accounts()} == truth


def test_prompt_mode_deny(fresh_conn, sandbox):
    sandbox.configure(consent_mode="prompt")
    rc, _, err, browser = authorize(browser_kwargs={"decision": "deny"})
    assert rc == 1
    assert "access_denied" in one_error_line(err)
    assert "Authorization not granted" in browser.landing.text
    assert stored_refresh_token(fresh_conn) is None


# -- authorize: failures --------------------------------------------------------------------------


def test_deny_reports_access_denied_with_description(fresh_conn, sandbox):
    sandbox.configure(consent_mode="deny")
    rc, _, err, _ = authorize()
    assert rc == 1
    assert one_error_line(err) == ("error: Authorization failed: access_denied: The user denied the access")
    assert stored_refresh_token(fresh_conn) is None
    assert sandbox.counters()["token_grants"]["authorization_code"] == 0


def test_state_mismatch_is_rejected_before_any_exchange(fresh_conn, sandbox):
    rc, _, err, _ = authorize(browser_kwargs={"tamper": lambda u: _with_query(u, state="forged")})
    assert rc == 1
    assert "state does not match" in one_error_line(err)
    assert stored_refresh_token(fresh_conn) is None
    assert sandbox.counters()["token_grants"]["authorization_code"] == 0


def test_expired_code(fresh_conn, sandbox):
    sandbox.configure(code_ttl=0)
    rc, _, err, browser = authorize()
    assert rc == 1
    line = one_error_line(err)
    assert "invalid_grant" in line and "expired" in line and "Start the authorization again" in line
    assert browser.code() not in err
    assert stored_refresh_token(fresh_conn) is None


def test_reused_code(fresh_conn, sandbox):
    rc, _, _, first = authorize()
    assert rc == 0
    used = first.code()
    rc, _, err, _ = authorize(browser_kwargs={"tamper": lambda u: _with_query(u, code=used)})
    assert rc == 1
    line = one_error_line(err)
    assert "already used" in line and used not in line


def test_listener_times_out(fresh_conn):
    rc, out, err = run_cli("authorize", "--no-browser", "--timeout", "0.3")
    assert rc == 1
    assert "no redirect reached" in one_error_line(err) and "--no-listen" in err
    assert AUTHORIZE_URL.search(out)


def test_busy_port_is_a_clear_error(make_conn):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        make_conn(refresh_token="", redirect_uri=f"http://127.0.0.1:{port}/callback")
        rc, out, err = run_cli("authorize", "--no-browser", "--timeout", "1")
    assert rc == 1 and f"cannot listen on 127.0.0.1:{port}" in one_error_line(err)
    assert out == ""  # failed before the customer was sent anywhere


@pytest.mark.parametrize(
    ("overrides", "argv", "expected"),
    [
        ({"host": ""}, (), "field 'host'"),
        ({"password": "wrong-secret"}, (), "login/password"),
        ({"redirect_uri": None}, (), "has no redirect_uri"),
        ({}, ("--scopes", "ACCOUNT_BASIC NOPE"), "unknown scope(s) NOPE"),
        ({"token_store": "memory"}, (), "consent_store 'memory'"),
    ],
)
def test_bad_setup_fails_before_the_customer_is_involved(make_conn, overrides, argv, expected):
    extra = {"redirect_uri": LOOPBACK_ANY_PORT, **overrides}
    make_conn(refresh_token="", **extra)
    rc, out, err = run_cli("authorize", "--no-browser", "--timeout", "1", *argv)
    assert rc in (1, 2)
    line = one_error_line(err)
    assert expected in line and "wrong-secret" not in line
    assert "/api/v1/authorize" not in out


def test_unknown_connection(monkeypatch):
    rc, _, err = run_cli("authorize", "--conn-id", "no_such_conn")
    assert rc == 1 and "connection 'no_such_conn' is not defined" in one_error_line(err)


# -- authorize: paste mode (redirect URI not on loopback) ----------------------------------------


def _web_client_conn(make_conn: Any, sandbox: Any, **extra: Any) -> str:
    sandbox.register_client("web-client", "web-secret-123", [WEB_REDIRECT])
    return make_conn(
        refresh_token="", login="web-client", password="web-secret-123", redirect_uri=WEB_REDIRECT, **extra
    )


def test_paste_mode_reads_the_redirect_url_from_stdin(make_conn, sandbox):
    conn_id = _web_client_conn(make_conn, sandbox)
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stdin, os.fdopen(write_fd, "w") as paste:
        out = SyncOut()
        browser = Browser(out, paste_to=paste)
        browser.start()
        rc, stdout, err = run_cli("authorize", "--no-browser", stdin=stdin, out=out)
        browser.join(10)
    assert browser.error is None, browser.error
    assert rc == 0, err
    assert "Paste the full URL" in stdout and "listed 6 account(s)" in stdout
    assert browser.callback.startswith(WEB_REDIRECT + "?")
    assert browser.code() not in stdout
    assert _next_run_accounts(conn_id)[1] == 6


def test_paste_mode_garbage_and_eof(make_conn, sandbox):
    _web_client_conn(make_conn, sandbox)
    rc, _, err = run_cli("authorize", "--no-browser", stdin=io.StringIO("\nhello there\n"))
    assert rc == 1 and "not the redirect URL" in one_error_line(err)
    rc, _, err = run_cli("authorize", "--no-browser", stdin=io.StringIO(""))
    assert rc == 1 and "no redirect URL was pasted" in one_error_line(err)


def test_no_listen_pastes_even_for_a_loopback_redirect(fresh_conn):
    out = SyncOut()
    rc, stdout, err = run_cli(
        "authorize", "--no-browser", "--no-listen", stdin=io.StringIO("?error=access_denied"), out=out
    )
    # the pasted URL has no state: refused as a crossed callback, and the error is reported
    assert rc == 1 and "access_denied" in one_error_line(err)
    assert "Paste the full URL" in stdout


# -- status, revoke, providers --------------------------------------------------------------------


def test_status_lifecycle(make_conn, sandbox):
    conn_id = make_conn(refresh_token="", redirect_uri=LOOPBACK_ANY_PORT)
    rc, out, _ = run_cli("status")
    assert rc == cli.EXIT_NO_CONSENT and "State:          no_consent" in out and "authorize" in out

    assert authorize()[0] == 0
    clear_token_cache()
    rc, out, err = run_cli("status", "--check-scopes")
    assert rc == 0, out + err
    assert "State:          ok" in out and "Scopes:         ACCOUNT_BASIC" in out
    # The new process shares the access token the authorization stored (no refresh grant yet),
    # so there is no "Last refresh" line; the idle clock runs from the authorization.
    assert "Idle lapse:     in 30 day(s)" in out
    token = stored_refresh_token(conn_id)
    assert token not in out

    rc, out, _ = run_cli("status", "--json")
    data = json.loads(out)
    assert data["state"] == "ok" and data["conn_id"] == conn_id and 0 < data["access_token_ttl"] <= 300
    assert len(data["scopes"]) == 8 and data["days_until_idle_lapse"] == 30.0
    assert token not in out

    sandbox.revoke_consent(customer_id="cust-0001")
    clear_token_cache()
    rc, out, _ = run_cli("status", "--json")
    # the shared access token still answers, with 602 (revoked); a refresh would be rejected
    assert rc == cli.EXIT_NO_CONSENT and json.loads(out)["state"] in ("revoked", "refresh_rejected")
    assert "Idle lapse" not in run_cli("status")[1]  # a dead consent has no idle clock


def test_status_scope_missing(make_conn):
    make_conn(consent_scopes="ACCOUNT_BASIC TRANSACTIONS")  # the connection asks for all 8
    rc, out, _ = run_cli("status")
    assert rc == 0  # usable, scopes not checked
    clear_token_cache()
    rc, out, _ = run_cli("status", "--check-scopes", "--json")
    data = json.loads(out)
    assert rc == cli.EXIT_NO_CONSENT and data["state"] == "scope_missing"
    assert "STATEMENTS" in data["missing_scopes"] and "TRANSACTIONS" not in data["missing_scopes"]


def test_status_bad_connection_is_an_error_not_a_traceback(make_conn):
    make_conn(password="wrong-secret")
    rc, out, err = run_cli("status")
    assert rc == 1 and "State:          error" in out and "login/password" in out
    assert "wrong-secret" not in out + err and "Traceback" not in err


def test_revoke(openbanking_conn, sandbox):
    rc, _, err = run_cli("revoke")  # stdin is not a terminal: no silent revoke
    assert rc == 2 and "--yes" in one_error_line(err)

    assert run_cli("status")[0] == 0  # stores the token (refresh)
    assert stored_refresh_token(openbanking_conn)
    rc, out, err = run_cli("revoke", "--yes")
    assert rc == 0, err
    assert "Consent revoked at the server" in out and "still holds a refresh_token extra" in out
    assert stored_refresh_token(openbanking_conn) is None
    clear_token_cache()
    rc, out, _ = run_cli("status")  # the store remembers the revocation: no call needed
    assert rc == cli.EXIT_NO_CONSENT and "State:          revoked" in out and "Idle lapse" not in out

    clear_token_cache()
    rc, out, _ = run_cli("revoke", "--yes")  # again: the server no longer knows it
    assert rc == 0 and "already revoked or lapsed" in out


def test_revoke_without_consent(fresh_conn):
    rc, out, _ = run_cli("revoke", "--yes")
    assert rc == 0 and "Nothing to revoke" in out


def test_providers(openbanking_conn, sandbox):
    rc, out, _ = run_cli("providers")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS"]
    assert lines[1].startswith("* 1000") and "Sandbox Bank" in lines[1] and "ACTIVE" in lines[1]
    assert any("1002" in line and "INACTIVE" in line for line in lines)
    rc, out, _ = run_cli("providers", "--json")
    assert rc == 0 and [p["id"] for p in json.loads(out)] == ["1000", "1001", "1002"]


def test_providers_wrong_secret(make_conn):
    make_conn(password="wrong-secret")
    rc, _, err = run_cli("providers")
    assert rc == 1 and "login/password" in one_error_line(err) and "wrong-secret" not in err


def test_usage_errors():
    rc, _, err = run_cli()
    assert rc == 2 and "required: COMMAND" in err
    rc, _, err = run_cli("authorize", "--bogus")
    assert rc == 2 and "unrecognized arguments: --bogus" in err
    rc, out, _ = run_cli("--version")
    assert rc == 0 and out.startswith("airflow-openbanking 0.")
    rc, out, _ = run_cli("authorize", "--help")
    assert rc == 0 and "--show-token" in out and "--no-listen" in out


# -- as a real command --------------------------------------------------------------------------


def test_python_dash_m_paste_flow_and_failure(make_conn, sandbox):
    """``python -m airflow_provider_openbanking``: a real process, real stdin/stdout."""
    conn_id = _web_client_conn(make_conn, sandbox)
    env = {**os.environ, "DISPLAY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_openbanking", "authorize", "--conn-id", conn_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    seen = SyncOut()
    for line in proc.stdout:
        seen.write(line)
        if "Paste the full URL" in line:
            break
    browser = Browser(seen, paste_to=proc.stdin)
    browser.run()
    assert browser.error is None, browser.error
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "listed 6 account(s)" in rest
    token = stored_refresh_token(conn_id)
    assert token and token not in seen.text() + rest + err
    assert err.strip() == ""  # no log noise, no warning, no traceback on a real terminal


# -- the next DAG run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_next_dag_run_uses_the_new_consent(fresh_conn, sandbox, tmp_path):
    """After ``authorize``, a real ``dag.test()`` run (sensor + operator) uses the stored consent.

    The connection has no refresh token at all: the tasks can only work from the token store.
    """
    from airflow.sdk import DAG

    from airflow_provider_openbanking.operators.openbanking import OpenBankingAccountsOperator
    from airflow_provider_openbanking.sensors.openbanking import OpenBankingTokenSensor
    from tests.operators.dagrun_helpers import UTC, run_dag

    assert authorize()[0] == 0
    clear_token_cache()  # the tasks must work from the consent store, as a new worker would
    grants_before = sandbox.counters()["token_grants"]["refresh_token"]
    with DAG("ob_cli_next_run", schedule=None, start_date=dt.datetime(2026, 11, 1, tzinfo=UTC)) as dag:
        wait = OpenBankingTokenSensor(
            task_id="wait_for_consent", openbanking_conn_id=fresh_conn, deferrable=False, timeout=30
        )
        land = OpenBankingAccountsOperator(
            task_id="accounts", openbanking_conn_id=fresh_conn, destination=str(tmp_path)
        )
        wait >> land
    result = run_dag(dag, dt.datetime(2026, 11, 19, tzinfo=UTC))
    assert result.states == {"wait_for_consent": "success", "accounts": "success"}
    files = list(tmp_path.rglob("*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 6
    # the tasks share the access token the authorization stored (consent store): no grant at all
    assert sandbox.counters()["token_grants"]["refresh_token"] == grants_before


def test_listener_takes_one_callback_on_its_path_only():
    with cli.CallbackListener("http://127.0.0.1:0/cb") as listener:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/cb", listener.redirect_uri)
        http = requests.Session()
        http.trust_env = False
        base = listener.redirect_uri.rsplit("/", 1)[0]
        assert http.get(f"{base}/favicon.ico", timeout=5).status_code == 404
        assert listener.wait(0.05) is None
        assert http.get(f"{listener.redirect_uri}?code=abc&state=s1", timeout=5).status_code == 200
        assert http.get(f"{listener.redirect_uri}?code=def&state=s2", timeout=5).status_code == 404
        assert listener.wait(1) == f"{listener.redirect_uri}?code=abc&state=s1"


def test_loopback_detection():
    assert cli.is_loopback_redirect("http://127.0.0.1:8976/callback")
    assert cli.is_loopback_redirect("http://localhost/cb")
    assert cli.is_loopback_redirect("http://[::1]:9000/cb")
    assert not cli.is_loopback_redirect("https://127.0.0.1:8976/callback")  # no TLS listener
    assert not cli.is_loopback_redirect("http://app.example.com/cb")
    assert not cli.is_loopback_redirect("http://127.0.0.1:notaport/cb")
