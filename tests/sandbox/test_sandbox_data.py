"""The lazy transaction index arithmetic agrees with a brute-force scan (in process, no HTTP)."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_openbanking.sandbox.data import DAY, Bank, date_to_epoch
from airflow_provider_openbanking.sandbox.pdf import build_pdf


@pytest.mark.parametrize(("n", "days"), [(1, 30), (7, 30), (400, 90), (5000, 10)])
def test_windows_match_brute_force(n, days):
    bank = Bank(customers=1, accounts_per_customer=5, transactions_per_account=n, days=days)
    for account in bank.customers[0].accounts:
        series = bank.series(account, n)
        horizon = int((bank.default_now + 7 * DAY - bank.span_start) / series.step) + 2  # past every pending
        posted = [series.posted_at(i) for i in range(horizon)]
        assert posted == sorted(posted)
        for now in (
            bank.default_now,
            bank.default_now - 3 * DAY + 7,
            bank.default_now + 2 * DAY,
            bank.span_start,
        ):
            for start, end in (
                (None, None),
                (bank.span_start + DAY, bank.default_now - DAY),
                (None, now - 5 * DAY),
            ):
                window = series.window(now, start, end)
                lo, hi = start if start is not None else -(1 << 62), end if end is not None else 1 << 62
                want_posted = [i for i in range(horizon) if posted[i] <= now and lo <= posted[i] <= hi]
                want_pending = [
                    i
                    for i in range(horizon)
                    if posted[i] > now
                    and series.transacted_at(i) <= now
                    and lo <= series.transacted_at(i) <= hi
                ]
                assert list(range(window.lo, window.hi)) == want_posted
                assert window.pending == want_pending
                records = list(window.slice(0, window.total))
                assert [r["status"] for r in records].count("PENDING") == len(want_pending)
    first = bank.customers[0].accounts[0]
    default = bank.series(first, n).window(bank.default_now, None, None)
    assert default.pending, "deposit accounts always have a pending authorization at the default clock"


def test_statements_follow_the_clock():
    bank = Bank(customers=1, days=90, end_date=dt.date(2026, 11, 20))
    account = bank.customers[0].accounts[0]
    assert [s.month for s in bank.statements(account, bank.default_now)] == [8, 9, 10]
    later = date_to_epoch(dt.date(2026, 12, 1)) + 60
    assert [s.month for s in bank.statements(account, later)] == [8, 9, 10, 11]


def test_pdf_escapes_text():
    pdf = build_pdf(["Title (with) parens \\ backslash", "second"])
    assert b"\\(with\\)" in pdf and pdf.endswith(b"%%EOF\n")
