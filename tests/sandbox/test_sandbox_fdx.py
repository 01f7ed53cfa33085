"""Sandbox FDX 5 data endpoints: shapes, pagination, dates, pending->posted, statements, errors."""

from __future__ import annotations

import re
from collections import Counter

import pytest

LIGHTWEIGHT = {
    "accountId",
    "accountCategory",
    "accountType",
    "accountNumberDisplay",
    "productName",
    "nickname",
    "status",
    "description",
    "currency",
}
TXN_REQUIRED = {"transactionId", "transactionTimestamp", "description", "debitCreditMemo", "status", "amount"}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def token(api):
    return api.customer_token("cust-0001")


def _accounts(api, token, **params):
    items, _ = api.all_pages("/accounts", token, "accounts", **params)
    return [api.unwrap(a) for a in items]


def test_checker_like_flow_and_shapes(api, sandbox):
    """The same walk as check_fdx_conformance.py, asserting the FDX 5 shapes it validates."""
    tok = api.customer_token()
    customer = api.fdx("/customers/current", tok).json()
    assert customer["customerId"] == "cust-0001" and customer["name"]["first"] and customer["email"]
    accounts = _accounts(api, tok)
    assert [k for k, _ in accounts] == [
        "depositAccount",
        "depositAccount",
        "locAccount",
        "loanAccount",
        "investmentAccount",
        "depositAccount",
    ]
    details = _accounts(api, tok, resultType="details")
    assert [a["accountId"] for _, a in details] == [a["accountId"] for _, a in accounts]
    seen_pending = False
    required_details = {
        "depositAccount": {"currentBalance", "availableBalance"},
        "loanAccount": {"principalBalance", "interestRate", "interestRateType", "accountNumber"},
        "locAccount": {"currentBalance"},
        "investmentAccount": {"availableCashBalance", "currentValue", "holdings"},
    }
    wrappers = {
        "depositAccount": "depositTransaction",
        "loanAccount": "loanTransaction",
        "locAccount": "locTransaction",
        "investmentAccount": "investmentTransaction",
    }
    for kind, acc in accounts:
        assert set(acc) == LIGHTWEIGHT
        assert acc["status"] == "OPEN" and acc["currency"]["currencyCode"] in ("CAD", "USD")
        full = api.fdx(f"/accounts/{acc['accountId']}", tok).json()
        ((fkind, facc),) = full.items()
        assert fkind == kind and required_details[kind] <= set(facc)
        assert facc["accountNumber"][-4:] == acc["accountNumberDisplay"][-4:] != facc["accountNumber"]
        if kind == "investmentAccount":
            assert all({"cashAccount", "marketValue"} <= set(h) for h in facc["holdings"])
        txs, _ = api.all_pages(f"/accounts/{acc['accountId']}/transactions", tok, "transactions")
        assert txs
        for t in txs:
            tkind, tx = api.unwrap(t)
            assert tkind == wrappers[kind] and set(tx) >= TXN_REQUIRED
            assert tx["amount"] > 0 and tx["debitCreditMemo"] in ("CREDIT", "DEBIT")
            assert TIMESTAMP.match(tx["transactionTimestamp"])
            if tx["status"] == "POSTED":
                assert TIMESTAMP.match(tx["postedTimestamp"])
            else:
                assert tx["status"] == "PENDING" and "postedTimestamp" not in tx
                seen_pending = True
            if kind == "investmentAccount":
                assert "fees" in tx and "transactionType" in tx
        ids = [api.unwrap(t)[1]["transactionId"] for t in txs]
        assert len(ids) == len(set(ids))
        statements, _ = api.all_pages(f"/accounts/{acc['accountId']}/statements", tok, "statements")
        assert statements and all(
            s["links"][0]["href"].startswith("/api/fdx/5/accounts/") for s in statements
        )
        contact = api.fdx(f"/accounts/{acc['accountId']}/contact", tok).json()
        assert all(contact[k] for k in ("holders", "emails", "addresses", "telephones"))
        assert all(re.fullmatch(r"\d+", t["number"]) for t in contact["telephones"])
    assert seen_pending
    networks, _ = api.all_pages(
        f"/accounts/{accounts[0][1]['accountId']}/payment-networks", tok, "paymentNetworks"
    )
    assert {"bankId", "identifier", "type", "transferIn", "transferOut"} <= set(networks[0])


def test_accounts_pagination_links_and_filter(api, token):
    r = api.fdx("/accounts", token, params={"limit": 4}).json()
    assert r["page"]["totalElements"] == 6 and len(r["accounts"]) == 4
    href = r["links"]["next"]["href"]
    assert href.startswith("/api/fdx/5/accounts?") and f"offset={r['page']['nextOffset']}" in href
    second = api.get(href, token).json()
    assert (
        len(second["accounts"]) == 2 and "nextOffset" not in second["page"] and "next" not in second["links"]
    )
    assert second["page"]["prevOffset"]
    ids = [api.unwrap(a)[1]["accountId"] for a in r["accounts"]]
    one = api.fdx("/accounts", token, params={"accountIds": f"{ids[1]},{ids[3]},nope"}).json()
    assert [api.unwrap(a)[1]["accountId"] for a in one["accounts"]] == [ids[1], ids[3]]
    assert api.fdx("/accounts", token, params={"resultType": "everything"}).status_code == 400
    assert api.fdx("/accounts", token, params={"offset": "%%%"}).status_code == 400
    assert api.fdx("/accounts", token, params={"limit": "0"}).status_code == 400


def test_transactions_pagination_matches_truth(api, sandbox, token):
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    items, pages = api.all_pages(f"/accounts/{acc}/transactions", token, "transactions", limit=37)
    truth = sandbox.truth_transactions(acc)
    assert pages == -(-len(truth) // 37)
    assert [api.unwrap(t)[1] for t in items] == truth
    first = api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 37}).json()
    assert first["page"]["totalElements"] == len(truth) == 401  # 400 posted in the span + 1 pending
    # links.next.href is a complete relative URL
    nxt = api.get(first["links"]["next"]["href"], token).json()
    assert api.unwrap(nxt["transactions"][0])[1] == truth[37]
    # the knob page_size is the default limit; limit is capped at 1000
    sandbox.configure(page_size=150)
    assert len(api.fdx(f"/accounts/{acc}/transactions", token).json()["transactions"]) == 150
    big = api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 5000}).json()
    assert len(big["transactions"]) == 401 and "nextOffset" not in big["page"]


def test_date_filtering_on_posted_date(api, sandbox, token):
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    params = {"startTime": "2026-10-01", "endTime": "2026-10-07"}
    items, _ = api.all_pages(f"/accounts/{acc}/transactions", token, "transactions", **params)
    txs = [api.unwrap(t)[1] for t in items]
    assert txs and all("2026-10-01" <= t["postedTimestamp"][:10] <= "2026-10-07" for t in txs)
    assert txs == sandbox.truth_transactions(acc, "2026-10-01", "2026-10-07")
    everything = sandbox.truth_transactions(acc)
    expected = [
        t
        for t in everything
        if t["status"] == "POSTED" and "2026-10-01" <= t["postedTimestamp"][:10] <= "2026-10-07"
    ]
    assert txs == expected
    # pending ones are filtered on their transaction date
    pending = [t for t in everything if t["status"] == "PENDING"]
    assert pending
    day = pending[0]["transactionTimestamp"][:10]
    window = api.fdx(f"/accounts/{acc}/transactions", token, params={"startTime": day, "endTime": day}).json()
    assert pending[0]["transactionId"] in {api.unwrap(t)[1]["transactionId"] for t in window["transactions"]}
    # before the span: empty list, or 1107 with the knob
    empty = api.fdx(
        f"/accounts/{acc}/transactions", token, params={"startTime": "2001-01-01", "endTime": "2001-01-31"}
    )
    assert (
        empty.status_code == 200
        and empty.json()["transactions"] == []
        and empty.json()["page"]["totalElements"] == 0
    )
    sandbox.configure(empty_as_1107=True)
    empty = api.fdx(
        f"/accounts/{acc}/transactions", token, params={"startTime": "2001-01-01", "endTime": "2001-01-31"}
    )
    assert empty.status_code == 404 and empty.json()["code"] == "1107"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"startTime": "2026-02-30"}, "702"),
        ({"endTime": "x"}, "702"),
        ({"startTime": "2026-10-01T00:00:00Z"}, "702"),
        ({"startTime": ""}, "702"),
        ({"endTime": ""}, "702"),
        ({"startTime": "2026-10-05", "endTime": "2026-10-01"}, "703"),
    ],
)
def test_bad_dates(api, sandbox, token, params, code):
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    r = api.fdx(f"/accounts/{acc}/transactions", token, params=params)
    assert r.status_code == 400 and r.json()["code"] == code and r.json()["debugMessage"]


def test_unknown_and_foreign_accounts_are_701(api, sandbox, token):
    other = sandbox.truth_accounts("cust-0002")[0]["accountId"]
    for path in (
        "/accounts/does-not-exist",
        f"/accounts/{other}",
        f"/accounts/{other}/transactions",
        "/accounts/x%2F..%2Fcustomers%2Fcurrent",
    ):
        r = api.fdx(path, token)
        assert r.status_code == 404 and r.json()["code"] == "701", path
        assert r.headers["ob-correlation-id"] and r.headers["ob-trace-id"]


def test_correlation_header_is_echoed(api, token):
    r = api.fdx("/accounts", token, headers={"x-fapi-interaction-id": "corr-42"})
    assert r.headers["ob-correlation-id"] == "corr-42" and r.headers["ob-trace-id"]
    r2 = api.fdx("/accounts/nope", token)
    assert r2.headers["ob-correlation-id"] != r.headers["ob-correlation-id"]


def test_pending_posts_under_new_id_when_now_advances(api, sandbox, token):
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    before = sandbox.truth_transactions(acc)
    pending = [t for t in before if t["status"] == "PENDING"]
    assert pending and pending[0]["transactionId"].startswith("p")
    p = pending[0]
    sandbox.configure(now="2026-11-24T23:59:59Z")
    items, _ = api.all_pages(f"/accounts/{acc}/transactions", token, "transactions", limit=500)
    after = {api.unwrap(t)[1]["transactionId"]: api.unwrap(t)[1] for t in items}
    assert p["transactionId"] not in after
    posted = after[p["transactionId"][1:]]
    assert posted["status"] == "POSTED" and posted["amount"] != p["amount"]
    assert posted["referenceTransactionId"] == p["transactionId"]
    assert (
        posted["transactionTimestamp"] == p["transactionTimestamp"]
        and posted["postedTimestamp"][:10] > "2026-11-20"
    )
    assert len(after) > len(before)  # new transactions appear as the clock moves on
    assert all(t["transactionTimestamp"] <= "2026-11-24T23:59:59.000Z" for t in after.values())
    # moving the clock back hides them again
    sandbox.configure(now=None)
    assert sandbox.truth_transactions(acc) == before


def test_statements_pdf_accept_processing_and_redirect(api, sandbox, token):
    acc = sandbox.truth_accounts("cust-0001")[0]
    statements, _ = api.all_pages(f"/accounts/{acc['accountId']}/statements", token, "statements")
    assert [s["statementDate"] for s in statements] == ["2026-08-31", "2026-09-30", "2026-10-31"]
    only = api.fdx(
        f"/accounts/{acc['accountId']}/statements", token, params={"startTime": "2026-09-15"}
    ).json()
    assert len(only["statements"]) == 2
    path = f"/accounts/{acc['accountId']}/statements/{statements[1]['statementId']}"
    r = api.fdx(path, token)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    pdf = r.content
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert acc["accountNumberDisplay"].encode() in pdf and b"September 2026" in pdf
    # every xref entry points at its object
    found = re.search(rb"startxref\n(\d+)\n%%EOF", pdf)
    assert found
    xref_at = int(found.group(1))
    assert pdf[xref_at:].startswith(b"xref")
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n \n", pdf)]
    for num, off in enumerate(offsets, start=1):
        assert pdf[off:].startswith(f"{num} 0 obj".encode())
    assert api.fdx(path, token, headers={"Accept": "application/pdf"}).status_code == 200
    r = api.fdx(path, token, headers={"Accept": "image/png"})
    assert r.status_code == 406 and r.json()["code"] == "1203"
    sandbox.configure(statement_processing=1)
    r = api.fdx(path, token)
    assert r.status_code == 400 and r.json()["code"] == "1300"
    assert api.fdx(path, token).status_code == 200
    sandbox.configure(statement_redirect=True)
    r = api.fdx(path, token, allow_redirects=False)
    assert r.status_code == 302 and "/_files/statements/" in r.headers["Location"]
    followed = api.get(r.headers["Location"])  # no bearer token needed: a signed URL
    assert followed.status_code == 200 and followed.content == pdf
    assert api.get(r.headers["Location"].replace("sig=", "sig=0")).status_code == 403
    r = api.fdx(f"/accounts/{acc['accountId']}/statements/nope", token)
    assert r.status_code == 404


def test_scopes_shape_customer_and_holdings(api, sandbox):
    tok = api.customer_token(scopes="ACCOUNT_DETAILED CUSTOMER_PERSONAL")
    customer = api.fdx("/customers/current", tok).json()
    assert "email" not in customer and customer["accounts"]
    invest = next(
        a for a in sandbox.truth_accounts("cust-0001") if a["accountCategory"] == "INVESTMENT_ACCOUNT"
    )
    assert invest["holdings"]
    full = api.fdx(f"/accounts/{invest['accountId']}", tok).json()["investmentAccount"]
    assert "holdings" not in full
    tok = api.customer_token(scopes="ACCOUNT_DETAILED INVESTMENTS")
    full = api.fdx(f"/accounts/{invest['accountId']}", tok).json()["investmentAccount"]
    assert full["holdings"] == invest["holdings"]
    assert api.fdx(f"/accounts/{invest['accountId']}/contact", tok).json()["code"] == "602"


def test_payment_networks_paginate_and_other_types_are_704(api, sandbox, token):
    truth = sandbox.truth_accounts("cust-0001")
    deposit = truth[0]["accountId"]
    items, pages = api.all_pages(f"/accounts/{deposit}/payment-networks", token, "paymentNetworks", limit=1)
    assert pages == 2 and {n["type"] for n in items} == {"CA_ACSS", "CA_LVTS"}
    assert all(n["identifier"] == truth[0]["accountNumber"] for n in items)
    r = api.fdx(f"/accounts/{truth[2]['accountId']}/payment-networks", token)
    assert r.status_code == 422 and r.json()["code"] == "704"


def test_data_is_realistic_and_deterministic(sandbox):
    truth = sandbox.truth_accounts()
    assert len(truth) == 18 and len({a["accountId"] for a in truth}) == 18
    assert Counter(a["accountCategory"] for a in truth) == {
        "DEPOSIT_ACCOUNT": 9,
        "LOC_ACCOUNT": 3,
        "LOAN_ACCOUNT": 3,
        "INVESTMENT_ACCOUNT": 3,
    }
    txs = sandbox.truth_transactions(truth[0]["accountId"])
    assert {t["debitCreditMemo"] for t in txs} == {"CREDIT", "DEBIT"}
    assert len({t["description"] for t in txs}) > 20 and len({t["category"] for t in txs}) > 8
    delayed = [t for t in txs if t.get("referenceTransactionId")]
    assert 0.01 < len(delayed) / len(txs) < 0.12
    sandbox.reset()
    assert sandbox.truth_transactions(truth[0]["accountId"]) == txs
