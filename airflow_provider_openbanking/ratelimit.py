"""One rate limit per API client, shared by every thread of the process.

Flinks meters requests per client (client id), not per consent nor per thread. A batched task runs
``max_workers`` threads across hundreds of consents, each with its own hook, and every one of them
speaks for the same client: so the limiter is keyed by (API base URL, client id) and looked up in a
process-wide registry (:func:`rate_limiter_for`), not owned by a hook.

- ``max_requests_per_second`` (connection extra) sets a token bucket in its "virtual scheduling"
  form (GCRA): each :meth:`RateLimiter.acquire` reserves the next free send time, so N threads are
  spaced ``1 / rate`` apart in arrival order instead of waking together and racing for a token.
  ``None`` means no client-side limit.
- A 429 / 1207 carrying ``Retry-After`` calls :meth:`RateLimiter.pause_until`: every thread of that
  client -- not only the one that was told -- sends nothing before the deadline, and sending
  resumes at the configured rate (no burst after the pause). This holds with or without a rate.

Across processes (one task instance is one process under real services) the limiter cannot see
the others: the Airflow pool bounds how many processes call the API at once, so the per-process
rate is the client's limit divided by the pool's slots (see docs/operators.md, "Sizing").

The transport calls :meth:`acquire` before every attempt it sends and :meth:`pause_until` when an
answer asks it to wait (the hook-point ``Transport(..., rate_limiter=...)``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class RateLimiter(Protocol):
    """What the transport needs from a rate limiter."""

    def acquire(self) -> None:
        """Block until one request may be sent."""

    def pause_until(self, monotonic_deadline: float) -> None:
        """Let no request of this client be sent before ``monotonic_deadline`` (``time.monotonic``)."""


@dataclass
class LimiterStats:
    """Counters of one limiter (benchmarks and logs read them)."""

    acquired: int = 0
    waited_seconds: float = 0.0
    pauses: int = 0


class TokenBucket:
    """A thread-safe token bucket of ``rate`` requests per second with ``burst`` tokens.

    :param rate: requests per second; ``None`` (or 0) = unlimited (pauses still apply).
    :param burst: requests that may go out back to back after an idle period (default 1: a steady
        pace, which never trips a server-side bucket of the same rate).
    :param clock: monotonic clock (tests pass a fake one together with ``sleep``).
    """

    def __init__(
        self,
        rate: float | None = None,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate < 0:
            raise ValueError(f"rate must not be negative, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._tat = 0.0  # theoretical arrival time of the next request (GCRA)
        self._paused_until = 0.0
        self.burst = float(burst)
        self.rate: float | None = None
        self.stats = LimiterStats()
        self.set_rate(rate)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"

    def set_rate(self, rate: float | None) -> None:
        """Change the rate (a connection edited while the process runs)."""
        with self._lock:
            self.rate = float(rate) if rate else None

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def _reserve(self, now: float) -> float:
        """The time this caller may send at; books the slot. Call with the lock held."""
        start = max(now, self._paused_until)
        if self.rate is None:
            return start
        interval = 1.0 / self.rate
        tau = (self.burst - 1.0) * interval
        tat = max(self._tat, start)
        send_at = max(start, tat - tau)
        self._tat = tat + interval
        return send_at

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                send_at = self._reserve(now)
            delay = send_at - now
            if delay > 0:
                self._sleep(delay)
            with self._lock:
                # A pause that arrived while this thread slept voids its reservation.
                if self._clock() >= self._paused_until:
                    self.stats.acquired += 1
                    self.stats.waited_seconds += max(0.0, delay)
                    return

    def pause_until(self, monotonic_deadline: float) -> None:
        with self._lock:
            if monotonic_deadline <= self._paused_until:
                return
            self._paused_until = monotonic_deadline
            self.stats.pauses += 1
            if self.rate is not None:
                # Resume at the configured pace: no burst of everything that queued up meanwhile.
                tau = (self.burst - 1.0) / self.rate
                self._tat = max(self._tat, monotonic_deadline + tau)


_REGISTRY: dict[str, TokenBucket] = {}
_REGISTRY_LOCK = threading.Lock()


def client_key(base_url: str, client_id: str) -> str:
    """The identity a server meters requests by: one API, one client id."""
    return f"{base_url.rstrip('/')}|{client_id}"


def rate_limiter_for(key: str, rate: float | None) -> TokenBucket:
    """The process-wide limiter of one client (see :func:`client_key`), created on first use.

    Every hook of the same client -- whatever its connection id or consent -- gets the same one; a
    different ``rate`` for an existing client updates it (the last configured wins).
    """
    with _REGISTRY_LOCK:
        limiter = _REGISTRY.get(key)
        if limiter is None:
            limiter = _REGISTRY[key] = TokenBucket(rate)
            return limiter
    if (float(rate) if rate else None) != limiter.rate:
        limiter.set_rate(rate)
    return limiter


def reset_rate_limiters() -> None:
    """Forget every limiter of this process (tests)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()


__all__ = [
    "LimiterStats",
    "RateLimiter",
    "TokenBucket",
    "client_key",
    "rate_limiter_for",
    "reset_rate_limiters",
]
