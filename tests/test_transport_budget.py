"""One retry budget per logical call (issue 15, item 2) and the rate-limiter hook-point.

Against real sockets: a loopback port nobody listens on (refused), a listening socket that never
answers (read timeout), and the sandbox with injected faults, which counts what reached it.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_provider_openbanking.exceptions import ApiError, TransientApiError
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
from airflow_provider_openbanking.transport import RetryPolicy, Transport

ATTEMPT_LINE = re.compile(r"attempt (\d+) of (\d+) failed")


def _refused_port() -> int:
    """A loopback port with nobody listening (bound then closed: the kernel refuses connections)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections complete in the backlog; nothing is ever read or written
    yield int(sock.getsockname()[1])
    sock.close()


def _attempts_logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int]]:
    return [
        (int(m.group(1)), int(m.group(2)))
        for r in caplog.records
        if r.name.endswith("transport")
        for m in [ATTEMPT_LINE.search(r.getMessage())]
        if m
    ]


def test_a_refused_port_costs_one_budget_and_names_host_port_and_cause(make_conn, caplog):
    """The token request runs inside the data request: one loop of max_attempts, not one per level."""
    port = _refused_port()
    conn_id = make_conn(host=f"http://127.0.0.1:{port}", max_attempts=4, retry_initial_wait=0.05)
    hook = OpenBankingHook(conn_id)
    caplog.set_level(logging.WARNING, logger="airflow_provider_openbanking.transport")
    started = time.monotonic()
    with pytest.raises(TransientApiError) as err:
        list(hook.iter_accounts())
    elapsed = time.monotonic() - started

    assert _attempts_logged(caplog) == [(1, 4), (2, 4), (3, 4)], "attempt counts read straight"
    message = str(err.value)
    assert message.startswith("POST /api/v1/token failed: ")
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in message
    assert "Gave up on GET /api/fdx/5/accounts after 4 attempt(s)" in message
    assert "ob-correlation-id" not in message, "no server answered: no correlation ids"
    assert elapsed < 5, elapsed


def test_token_request_inside_a_data_request_is_not_retried_on_its_own(make_conn, sandbox):
    """Every token attempt reaches the sandbox: with the old nested loops this was 3 x 3 = 9."""
    conn_id = make_conn(max_attempts=3)
    hook = OpenBankingHook(conn_id)
    sandbox.inject({"kind": "status", "status": 503, "count": 99, "path": "/api/v1/token"})
    with pytest.raises(TransientApiError, match="HTTP 503"):
        list(hook.iter_accounts())
    counters = sandbox.counters()
    assert counters["faults_injected"] == 3
    assert counters["requests"].get("POST /api/v1/token") == 3
    assert not any(key.startswith("GET /api/fdx") for key in counters["requests"])


def test_a_server_that_answered_is_quoted_with_its_correlation_ids(make_conn, sandbox):
    hook = OpenBankingHook(make_conn(max_attempts=2))
    hook.get_access_token()
    sandbox.inject({"kind": "status", "status": 503, "count": 9, "path": "/accounts"})
    with pytest.raises(TransientApiError) as err:
        list(hook.iter_accounts())
    assert err.value.correlation_id and f"ob-correlation-id={err.value.correlation_id}" in str(err.value)
    assert "Gave up after 2 attempt(s)" in str(err.value)


def test_the_whole_call_gives_up_within_max_elapsed_plus_one_timeout(silent_server):
    """A server that accepts and never answers: attempts stop at max_elapsed, and the last one's
    timeout is cut so that the call ends by max_elapsed + one request timeout."""
    transport = Transport(
        f"http://127.0.0.1:{silent_server}",
        timeout=0.6,
        retry=RetryPolicy(max_attempts=50, max_elapsed=1.0, initial_wait=0.05, max_wait=0.1),
    )
    started = time.monotonic()
    with pytest.raises(TransientApiError) as err:
        transport.request_json("GET", "/api/fdx/5/accounts")
    elapsed = time.monotonic() - started
    assert elapsed <= 1.0 + 0.6 + 0.3, elapsed
    message = str(err.value)
    assert f"127.0.0.1:{silent_server} did not answer within the timeout" in message
    assert re.search(r"Gave up after \d attempt\(s\)", message)
    transport.close()


def test_max_elapsed_bounds_a_refused_port_with_many_attempts():
    port = _refused_port()
    transport = Transport(
        f"http://127.0.0.1:{port}",
        timeout=5,
        retry=RetryPolicy(max_attempts=1000, max_elapsed=0.8, initial_wait=0.1, max_wait=0.2),
    )
    started = time.monotonic()
    with pytest.raises(TransientApiError, match="Connection refused"):
        transport.request_json("GET", "/x")
    assert time.monotonic() - started < 0.8 + 0.3


class FakeLimiter:
    """Records what the transport asks of a rate limiter (the real one is issue 14's)."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[float] = []
        self.lock = threading.Lock()

    def acquire(self) -> None:
        with self.lock:
            self.acquired += 1

    def pause_until(self, monotonic_deadline: float) -> None:
        with self.lock:
            self.pauses.append(monotonic_deadline)


def test_rate_limiter_is_asked_before_every_request_and_paused_by_retry_after(sandbox):
    limiter = FakeLimiter()
    transport = Transport(
        sandbox.url, retry=RetryPolicy(max_attempts=4, initial_wait=0.05), rate_limiter=limiter
    )
    sandbox.inject(
        {
            "kind": "status",
            "status": 429,
            "code": "1207",
            "retry_after": 0.4,
            "count": 1,
            "path": "/providers",
        },
        {"kind": "status", "status": 503, "count": 1, "path": "/providers"},
    )
    before = time.monotonic()
    with pytest.raises(ApiError) as err:  # no bearer token: the third request is refused
        transport.request_json("GET", "/api/v1/providers")
    assert err.value.status == 401 and not isinstance(err.value, TransientApiError)
    sent = sum(sandbox.counters()["requests"].values())
    assert sent == 3
    assert limiter.acquired == sent, "acquire() before every request"
    assert len(limiter.pauses) == 1, "only the 429 with Retry-After pauses the limiter"
    assert before + 0.35 <= limiter.pauses[0] <= time.monotonic()
    transport.close()


def test_the_token_sent_is_asked_for_after_the_rate_limit_wait(sandbox):
    """A thread waiting in the bucket (or out a client-wide Retry-After) must not send a token that
    expired while it waited: the token is asked for again once the slot is granted, and that one
    is sent. (It is asked for first too, so that a refresh grant due is paced before the slot.)"""
    events: list[str] = []
    handed: list[str] = []

    class OrderedLimiter(FakeLimiter):
        def acquire(self) -> None:
            super().acquire()
            events.append("acquired")

    class RecordingTokens:
        def get(self) -> str:
            events.append("token")
            handed.append(f"token-{len(handed)}")  # every call a new one: as if the old one expired
            return handed[-1]

        def invalidate(self, token: str) -> None:
            events.append(f"refused {token}")

    transport = Transport(sandbox.url, retry=RetryPolicy(max_attempts=1), rate_limiter=OrderedLimiter())
    with pytest.raises(ApiError):  # tokens the sandbox never issued: 401, two replays, then refused
        transport.request_json("GET", "/api/fdx/5/accounts", token_source=RecordingTokens())
    assert events.count("acquired") == 3 == sum(sandbox.counters()["requests"].values())
    expected: list[str] = []
    for send in range(3):
        expected += ["token", "acquired", "token", f"refused token-{2 * send + 1}"]
    assert events == expected
    transport.close()
