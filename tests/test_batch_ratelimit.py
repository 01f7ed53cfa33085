"""One rate limit per client, shared by every thread (issue 14, item 3), against the sandbox.

Requests go over real HTTP to the sandbox; the only thing added is a recorder around the hook's
``requests.Session.request`` that notes when each request left and when its answer came back.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
from airflow_provider_openbanking.ratelimit import (
    TokenBucket,
    client_key,
    rate_limiter_for,
    reset_rate_limiters,
)

CUSTOMER = "cust-0001"


@pytest.fixture(autouse=True)
def fresh_limiters() -> Iterator[None]:
    reset_rate_limiters()
    yield
    reset_rate_limiters()


class Recorder:
    """Wraps a session's ``request``: (sent_at, answered_at, status, path) per request."""

    def __init__(self, session: Any) -> None:
        self.calls: list[tuple[float, float, int, str]] = []
        self._lock = threading.Lock()
        real = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            sent = time.monotonic()
            resp = real(method, url, *args, **kwargs)
            with self._lock:
                self.calls.append((sent, time.monotonic(), resp.status_code, url))
            return resp

        session.request = request


def test_one_429_with_retry_after_pauses_every_thread_of_the_client(make_conn: Any, sandbox: Any) -> None:
    conn_id = make_conn(customer_id=CUSTOMER)
    hook = OpenBankingHook(conn_id)
    accounts = [a["accountId"] for a in sandbox.truth_accounts(CUSTOMER)]
    hook.get_access_token()  # the refresh grant happens before the threads start
    recorder = Recorder(hook.transport.session)
    retry_after = 1.5
    # The third data request gets a 429 with Retry-After; every other one succeeds.
    sandbox.inject(
        {"kind": "status", "status": 429, "retry_after": retry_after, "path": "/contact", "count": 1}
    )

    def work(i: int) -> None:
        hook.get_account_contact(accounts[i % len(accounts)])

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(36)))
    hook.close()

    limited = [c for c in recorder.calls if c[2] == 429]
    assert len(limited) == 1, recorder.calls
    answered = limited[0][1]
    after = [c for c in recorder.calls if c[0] > answered]
    assert len(after) >= 30, "the other requests were sent after the 429"
    # No thread -- not only the one that got the 429 -- sends before Retry-After has passed.
    earliest = min(c[0] for c in after)
    assert earliest >= answered + retry_after - 0.01, (earliest - answered, retry_after)
    assert hook.transport.rate_limiter is not None
    assert hook.transport.rate_limiter.stats.pauses == 1  # type: ignore[attr-defined]
    assert all(c[2] == 200 for c in recorder.calls if c is not limited[0])


def test_max_requests_per_second_keeps_every_thread_under_the_servers_limit(
    make_conn: Any, sandbox: Any
) -> None:
    """The sandbox enforces 20 requests/s per client (burst 2); the connection asks for 18/s: eight
    threads of two hooks (two connections of one client) never get a 429, and the pace holds."""
    rate = 18.0
    sandbox.configure(rate_limit_rps=20, rate_limit_burst=2)
    first = make_conn("ob_rate_a", customer_id=CUSTOMER, max_requests_per_second=rate)
    second = make_conn("ob_rate_b", customer_id="cust-0002", max_requests_per_second=rate)
    hooks = [OpenBankingHook(first), OpenBankingHook(second)]
    for hook in hooks:
        hook.get_access_token()
    assert hooks[0].transport.rate_limiter is hooks[1].transport.rate_limiter, "one limiter per client"
    accounts = {
        id(h): [a["accountId"] for a in sandbox.truth_accounts(c)]
        for h, c in zip(hooks, (CUSTOMER, "cust-0002"), strict=True)
    }
    recorders = [Recorder(h.transport.session) for h in hooks]
    before = sandbox.counters().get("rate_limited", 0)

    def work(i: int) -> None:
        hook = hooks[i % 2]
        ids = accounts[id(hook)]
        hook.get_account_contact(ids[i % len(ids)])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(54)))
    elapsed = time.monotonic() - started
    for hook in hooks:
        hook.close()
    assert sandbox.counters().get("rate_limited", 0) == before, "no request was refused"
    sends = sorted(c[0] for r in recorders for c in r.calls)
    assert len(sends) == 54
    # 54 requests at 18/s take at least 53/18 s; and the limiter does not slow down much beyond.
    assert elapsed >= 53 / rate - 0.05, elapsed
    assert elapsed < 53 / rate * 1.6 + 1.0, elapsed
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) > 1 / rate * 0.5, min(gaps)


def test_the_registry_gives_one_limiter_per_client_and_follows_the_configured_rate() -> None:
    a = rate_limiter_for(client_key("https://ob.example/", "client-1"), 5)
    assert rate_limiter_for(client_key("https://ob.example", "client-1"), 5) is a
    assert rate_limiter_for(client_key("https://ob.example", "client-2"), 5) is not a
    rate_limiter_for(client_key("https://ob.example", "client-1"), 7)
    assert a.rate == 7.0
    with pytest.raises(ValueError, match="negative"):
        TokenBucket(-1)


def test_a_pause_voids_reservations_made_before_it() -> None:
    """A thread that booked a slot before the pause and wakes inside it waits for the pause end;
    after the pause sending resumes at the configured pace, not in a burst."""
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10, clock=lambda: now[0], sleep=sleep)
    bucket.acquire()  # at 100.0
    bucket.pause_until(103.0)
    bucket.acquire()  # waits for the pause
    assert now[0] == pytest.approx(103.0)
    bucket.acquire()
    assert now[0] == pytest.approx(103.1)  # paced again: 1/rate later
    assert bucket.stats.acquired == 3 and bucket.stats.pauses == 1
