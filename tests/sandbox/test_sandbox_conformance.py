"""The sandbox answers what a conforming FDX 5.3 server answers (issue 16: the Schemathesis findings),
keeps the Flinks behaviours that differ on purpose, and has a strict FDX 5.3 mode (knob
``strict_fdx53``) for the hook's fidelity tests."""

from __future__ import annotations

import base64

import pytest


@pytest.fixture
def token(api):
    return api.customer_token("cust-0001")


def _offset_of(index: int) -> str:
    """An offset as this sandbox spells them (opaque to clients; the tests know the format)."""
    return base64.urlsafe_b64encode(f"i{index}".encode()).rstrip(b"=").decode()


def _ids(api, body, key="accounts"):
    return [api.unwrap(a)[1]["accountId"] for a in body[key]]


def test_a_page_past_the_end_is_refused_not_served_empty(api, sandbox, token):
    """``accounts`` and ``paymentNetworks`` need at least one item: an offset past the data is
    not one the server handed out, so it is a 400, never a 200 with ``[]`` and a ``prevOffset``
    pointing past the data."""
    deposit = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    cases = [
        ("/accounts", {"offset": _offset_of(6)}),
        ("/accounts", {"offset": _offset_of(60), "limit": 2}),
        (f"/accounts/{deposit}/payment-networks", {"offset": _offset_of(2)}),
        (f"/accounts/{deposit}/transactions", {"offset": _offset_of(401)}),
        (f"/accounts/{deposit}/statements", {"offset": _offset_of(50)}),
    ]
    for path, params in cases:
        r = api.fdx(path, token, params=params)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["code"] == "401" and "past the end" in r.json()["debugMessage"]
    # a page past the end of a filtered listing, with an offset that was real for the whole one
    first = api.fdx("/accounts", token, params={"limit": 4}).json()
    two = ",".join(_ids(api, first)[:2])
    past = api.fdx("/accounts", token, params={"accountIds": two, "offset": first["page"]["nextOffset"]})
    assert past.status_code == 400 and past.json()["code"] == "401"


def test_every_served_page_has_items_and_offsets_inside_the_data(api, sandbox, token):
    deposit = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    for path, key, limit in (
        ("/accounts", "accounts", 4),
        (f"/accounts/{deposit}/payment-networks", "paymentNetworks", 1),
        (f"/accounts/{deposit}/transactions", "transactions", 150),
    ):
        params: dict[str, object] = {"limit": limit}
        while True:
            body = api.fdx(path, token, params=params).json()
            assert body[key], path
            page = body["page"]
            for name in ("prevOffset", "nextOffset"):
                if name in page:  # both lead to a page with items
                    other = api.fdx(path, token, params={"limit": limit, "offset": page[name]})
                    assert other.status_code == 200 and other.json()[key], (path, name)
            if "nextOffset" not in page:
                break
            params = {"limit": limit, "offset": page["nextOffset"]}
    # an empty date window is still an empty list (``transactions`` has no minItems) on offset 0
    empty = api.fdx(
        f"/accounts/{deposit}/transactions",
        token,
        params={"startTime": "2001-01-01", "endTime": "2001-01-02"},
    )
    assert empty.status_code == 200 and empty.json()["transactions"] == []


@pytest.mark.parametrize("limit", ["", "0", "-1", "ten"])
def test_limit_must_be_a_positive_integer(api, token, limit):
    r = api.fdx("/accounts", token, params={"limit": limit})
    assert r.status_code == 400 and r.json()["code"] == "401", r.text
    assert api.get(f"{api.FDX}/accounts?limit=", token).status_code == 400


def test_flinks_refusals_kept(api, sandbox, token):
    """Flinks answers ``limit=0`` and ``endTime < startTime`` with 400 codes 401 / 703 (FDX would
    not say): the sandbox keeps Flinks' behaviour."""
    acc = sandbox.truth_accounts("cust-0001")[0]["accountId"]
    zero = api.fdx(f"/accounts/{acc}/transactions", token, params={"limit": 0})
    assert zero.status_code == 400 and zero.json()["code"] == "401"
    backwards = api.fdx(
        f"/accounts/{acc}/transactions", token, params={"startTime": "2026-10-05", "endTime": "2026-10-01"}
    )
    assert backwards.status_code == 400 and backwards.json()["code"] == "703"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/api/fdx/5/accounts", "GET"),
        ("DELETE", "/api/fdx/5/customers/current", "GET"),
        ("GET", "/api/v1/token", "POST"),
        ("PUT", "/api/v1/revoke", "DELETE"),
    ],
)
def test_405_names_the_allowed_methods(api, token, method, path, allow):
    r = api.http.request(method, api.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 405
    assert r.headers["Allow"] == allow
    assert r.json()["code"] == "405" and r.headers["ob-correlation-id"]


def test_strict_fdx53_mode(api, sandbox, token):
    """Knob ``strict_fdx53``: ``accountIds`` and dates are ignored, holdings only on the account."""
    truth = sandbox.truth_accounts("cust-0001")
    investment = next(a for a in truth if a["accountCategory"] == "INVESTMENT_ACCOUNT")
    deposit = truth[0]["accountId"]
    window = {"startTime": "2026-10-01", "endTime": "2026-10-07"}
    sandbox.configure(strict_fdx53=True)

    listed = api.fdx("/accounts", token, params={"accountIds": deposit}).json()
    assert _ids(api, listed) == [a["accountId"] for a in truth]
    details, _ = api.all_pages("/accounts", token, "accounts", resultType="details")
    assert all("holdings" not in api.unwrap(a)[1] for a in details)
    one = api.unwrap(api.fdx(f"/accounts/{investment['accountId']}", token).json())[1]
    assert one["holdings"] == investment["holdings"] and one["holdings"]

    txs, _ = api.all_pages(f"/accounts/{deposit}/transactions", token, "transactions", **window)
    assert [api.unwrap(t)[1] for t in txs] == sandbox.truth_transactions(deposit)
    statements, _ = api.all_pages(
        f"/accounts/{deposit}/statements", token, "statements", startTime="2026-10-01", endTime="2026-10-31"
    )
    assert len(statements) > 1  # every statement, not October's one
    backwards = {"startTime": "2026-10-05", "endTime": "2026-10-01"}
    assert api.fdx(f"/accounts/{deposit}/transactions", token, params=backwards).status_code == 200
    malformed = api.fdx(f"/accounts/{deposit}/transactions", token, params={"startTime": "2026-13-01"})
    assert malformed.status_code == 400 and malformed.json()["code"] == "702"  # still a DateString

    sandbox.configure(strict_fdx53=False)
    assert _ids(api, api.fdx("/accounts", token, params={"accountIds": deposit}).json()) == [deposit]
    filtered, _ = api.all_pages(f"/accounts/{deposit}/transactions", token, "transactions", **window)
    assert len(filtered) < len(txs)
