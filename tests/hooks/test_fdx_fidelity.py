"""The hook returns exactly what was asked, from any conforming server (issue 16).

Most tests run against the sandbox in its strict FDX 5.3 mode (knob ``strict_fdx53``: holdings
only on ``/accounts/{accountId}``, ``accountIds`` and dates ignored), as Stoplight Prism serving
the FDX 5.3 description behaves, and against the default (Flinks) mode for the same results.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_openbanking.exceptions import ConnectionConfigError
from airflow_provider_openbanking.filtering import STATEMENT_DATE_FIELDS, keep_in_window, utc_day
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
from airflow_provider_openbanking.pagination import DEFAULT_MAX_PAGES, PageLimitError, PageStats

CUSTOMER = "cust-0001"
ACCOUNT_ROUTE = "GET /api/fdx/5/accounts/{accountId}"


@pytest.fixture(params=["flinks", "strict_fdx53"])
def mode(request, sandbox):
    if request.param == "strict_fdx53":
        sandbox.configure(strict_fdx53=True)
    return request.param


def _holdings_truth(sandbox, customer=CUSTOMER):
    return [
        {"accountId": a["accountId"], **h}
        for a in sandbox.truth_accounts(customer)
        if a["accountCategory"] == "INVESTMENT_ACCOUNT"
        for h in a["holdings"]
    ]


def test_every_holding_from_either_kind_of_server(openbanking_conn, sandbox, mode):
    expected = _holdings_truth(sandbox)
    assert expected
    investment = {h["accountId"] for h in expected}
    stats = PageStats()
    holdings = list(OpenBankingHook(openbanking_conn).iter_holdings(stats=stats))
    assert holdings == expected
    assert stats.pages == 1
    by_id = sandbox.counters()["requests"].get(ACCOUNT_ROUTE, 0)
    # Flinks lists holdings: nothing more to read; FDX 5.3 has them only on the account
    assert by_id == (0 if mode == "flinks" else len(investment))

    only = list(OpenBankingHook(openbanking_conn).iter_holdings(account_ids=sorted(investment)))
    assert only == expected
    deposit = sandbox.truth_accounts(CUSTOMER)[0]["accountId"]
    assert list(OpenBankingHook(openbanking_conn).iter_holdings(account_ids=[deposit])) == []


def test_holdings_read_by_id_with_bounded_concurrency_in_order(monkeypatch):
    """Twelve investment accounts listed without holdings: read by id at most
    ``holdings_fetch_workers`` at a time, yielded in account order. The listing and the account
    reads are stand-ins here (the sandbox has one investment account per customer): only the
    scheduling is under test."""
    listing = [{"accountId": f"inv-{i:02d}", "accountCategory": "INVESTMENT_ACCOUNT"} for i in range(12)]
    listing.insert(3, {"accountId": "dep-1", "accountCategory": "DEPOSIT_ACCOUNT"})
    listing.insert(
        5, {"accountId": "inv-listed", "accountCategory": "INVESTMENT_ACCOUNT", "holdings": [{"n": 0}]}
    )
    lock = threading.Lock()
    in_flight = peak = 0

    def get_account(self, account_id):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02 if account_id.endswith(("1", "4", "7")) else 0.005)  # out-of-order completion
        with lock:
            in_flight -= 1
        return {"accountId": account_id, "holdings": [{"n": 1}, {"n": 2}]}

    monkeypatch.setattr(OpenBankingHook, "iter_accounts", lambda self, *a, **k: iter(listing))
    monkeypatch.setattr(OpenBankingHook, "get_account", get_account)
    hook = OpenBankingHook("unused")
    out = [(h["accountId"], h["n"]) for h in hook.iter_holdings()]
    expected_order = [a["accountId"] for a in listing if a["accountCategory"] == "INVESTMENT_ACCOUNT"]
    assert [a for a, _ in out] == [a for a in expected_order for _ in range(1 if a == "inv-listed" else 2)]
    assert ("inv-listed", 0) in out
    assert 1 < peak <= OpenBankingHook.holdings_fetch_workers


def test_accounts_filtered_on_the_client(openbanking_conn, sandbox, mode, caplog):
    ids = [a["accountId"] for a in sandbox.truth_accounts(CUSTOMER)]
    wanted = [ids[1], ids[3]]
    stats = PageStats()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_openbanking"):
        got = list(OpenBankingHook(openbanking_conn).iter_accounts("lightweight", wanted, stats=stats))
    assert [a["accountId"] for a in got] == wanted
    if mode == "flinks":
        assert stats.dropped == 0 and "ignored accountIds" not in caplog.text
    else:
        assert stats.dropped == len(ids) - 2
        assert "dropped 4 account(s)" in caplog.text and "ignored accountIds" in caplog.text
    details = list(OpenBankingHook(openbanking_conn).iter_accounts("details", [ids[0]]))
    assert [a["accountId"] for a in details] == [ids[0]] and "accountNumber" in details[0]


@pytest.mark.parametrize(
    ("start", "end"), [("2026-10-01", "2026-10-07"), ("2026-11-18", None), (None, "2026-08-25")]
)
def test_transactions_only_inside_the_window(openbanking_conn, sandbox, mode, caplog, start, end):
    acc = sandbox.truth_accounts(CUSTOMER)[0]["accountId"]
    expected = sandbox.truth_transactions(acc, start, end)
    everything = sandbox.truth_transactions(acc)
    assert 0 < len(expected) < len(everything)
    stats = PageStats()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_openbanking"):
        got = list(OpenBankingHook(openbanking_conn).iter_transactions(acc, start, end, stats=stats))
    assert [{k: v for k, v in t.items() if k != "accountCategory"} for t in got] == expected
    for t in got:
        day = utc_day(t.get("postedTimestamp") or t["transactionTimestamp"])
        assert (start or "0") <= day <= (end or "9")
    if mode == "flinks":
        assert stats.dropped == 0 and "dropped" not in caplog.text
    else:
        assert stats.dropped == len(everything) - len(expected)
        assert stats.records == len(everything)  # what the server sent
        assert f"dropped {stats.dropped} record(s) dated outside the requested window" in caplog.text
        assert caplog.text.count("dropped") == 1  # once per call, not per record


def test_statements_only_inside_the_window(openbanking_conn, sandbox, mode):
    acc = sandbox.truth_accounts(CUSTOMER)[0]["accountId"]
    stats = PageStats()
    got = list(
        OpenBankingHook(openbanking_conn).iter_statements(acc, "2026-10-01", "2026-10-31", stats=stats)
    )
    assert [s["statementDate"] for s in got] == ["2026-10-31"]
    assert stats.dropped == (0 if mode == "flinks" else 2)  # August and September


def test_utc_day_reads_fdx_dates_and_offsets():
    assert utc_day("2026-10-01") == "2026-10-01"
    assert utc_day("2026-10-01T23:59:59.000Z") == "2026-10-01"
    assert utc_day("2026-10-01T12:00:00") == "2026-10-01"
    assert utc_day("2026-10-01T22:30:00-05:00") == "2026-10-02"
    assert utc_day("2026-10-02T01:00:00.000+02:00") == "2026-10-01"
    assert utc_day("yesterday!") is None and utc_day(None) is None and utc_day(20261001) is None


# -- max_pages ------------------------------------------------------------------------------------


def test_max_pages_bounds_a_walk_with_a_clear_error(make_conn, sandbox):
    acc = sandbox.truth_accounts(CUSTOMER)[0]["accountId"]  # 401 transactions: 9 pages of 50
    enough = make_conn("ob_pages_ok", page_size=50, max_pages=9)
    assert len(list(OpenBankingHook(enough).iter_transactions(acc))) == 401
    tight = make_conn("ob_pages_tight", page_size=50, max_pages="8")
    with pytest.raises(PageLimitError) as err:
        list(OpenBankingHook(tight).iter_transactions(acc))
    assert isinstance(err.value, AirflowFailException)  # a retry would walk the same chain
    message = str(err.value)
    assert "after 8 page(s)" in message and "max_pages=8" in message and "/transactions" in message
    assert sandbox.counters()["requests"]["GET /api/fdx/5/accounts/{accountId}/transactions"] == 9 + 8


def test_max_pages_stops_a_server_that_never_ends(make_conn, sandbox):
    """A server that keeps handing out new offsets (here: an account of 1,000,000 transactions
    read 5 at a time) ends after max_pages, not after 200,000 requests."""
    acc = sandbox.truth_accounts(CUSTOMER)[0]["accountId"]
    sandbox.configure(account_transactions={acc: 1_000_000})
    conn_id = make_conn(page_size=5, max_pages=20)
    started = time.monotonic()
    with pytest.raises(PageLimitError, match="after 20 page"):
        list(OpenBankingHook(conn_id).iter_transactions(acc))
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_bad_max_pages_names_the_field(make_conn, value):
    conn_id = make_conn("ob_bad_pages", max_pages=value)
    with pytest.raises(ConnectionConfigError, match="max_pages"):
        OpenBankingHook(conn_id).config  # noqa: B018 - parsing is the point


def test_max_pages_default_is_generous(openbanking_conn):
    assert OpenBankingHook(openbanking_conn).config.max_pages == DEFAULT_MAX_PAGES >= 100_000


# -- fdx_base_path --------------------------------------------------------------------------------


class _MountedProxy:
    """A server that mounts the sandbox's FDX API at ``mount`` (``/`` = root-mounted): a small
    reverse proxy on 127.0.0.1 in front of the sandbox, recording every path it receives."""

    def __init__(self, upstream: str, mount: str) -> None:
        self.paths: list[str] = []
        proxy = self
        session = requests.Session()
        session.trust_env = False

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy.paths.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = None
                if self.path.startswith("/api/v1/"):
                    target = self.path
                elif self.path.startswith(mount) and not self.path.startswith("//"):
                    target = "/api/fdx/5/" + self.path[len(mount) :]
                if target is None:
                    status, ctype, content = (
                        404,
                        "application/json",
                        b'{"code": "404", "message": "no route"}',
                    )
                else:
                    wanted = ("authorization", "content-type", "accept")
                    headers = {k: v for k, v in self.headers.items() if k.lower() in wanted}
                    resp = session.request(
                        self.command, upstream + target, headers=headers, data=body, timeout=30
                    )
                    status, ctype, content = (
                        resp.status_code,
                        resp.headers.get("content-type", ""),
                        resp.content,
                    )
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("base", "mount"), [("/", "/"), ("/bank/", "/bank/"), ("/bank", "/bank/")])
def test_base_path_joins_with_one_slash(make_conn, sandbox, base, mount):
    """A root-mounted server (``fdx_base_path: "/"``) gets ``GET /customers/current``, never
    ``//customers/current``; a prefix with or without a trailing slash joins with one slash.
    (The server is the sandbox behind a path-mapping proxy on loopback.)"""
    proxy = _MountedProxy(sandbox.url, mount)
    try:
        hook = OpenBankingHook(make_conn(host=proxy.url, fdx_base_path=base))
        assert hook.get_customer()["customerId"] == CUSTOMER
        accounts = list(hook.iter_accounts())
        txs = list(hook.iter_transactions(accounts[0]["accountId"], "2026-10-01", "2026-10-02"))
        assert accounts and txs
    finally:
        proxy.close()
    data_paths = [p for p in proxy.paths if not p.startswith("/api/v1/")]
    assert data_paths[0] == f"{mount}customers/current"
    assert all(p.startswith(mount) and "//" not in p for p in data_paths), data_paths


@pytest.mark.parametrize("base", ["", "/api/fdx/5/", "/api/fdx/5"])
def test_base_path_empty_or_trailing_slash_reaches_the_api(make_conn, base):
    """``""`` is an unset extra (the default, ``/api/fdx/5``); a trailing slash is dropped."""
    customer = OpenBankingHook(make_conn(fdx_base_path=base)).get_customer()
    assert customer["customerId"] == CUSTOMER


def test_keep_in_window_keeps_what_it_cannot_place():
    stats = PageStats()
    records = [
        42,
        {"statementDate": "2026-01-01"},
        {"statementDate": "2026-10-05"},
        {},
        {"statementDate": "x"},
    ]
    kept = list(
        keep_in_window(
            iter(records), "2026-10-01", "2026-10-31", STATEMENT_DATE_FIELDS, stats=stats, endpoint="GET x"
        )
    )
    assert kept == [42, {"statementDate": "2026-10-05"}, {}, {"statementDate": "x"}]
    assert stats.dropped == 1
