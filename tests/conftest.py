"""Sandbox fixtures: one sandbox server per test session, reset before each test that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_openbanking.sandbox.testing import SandboxServer


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """A sandbox on a free loopback port for the whole session (3 customers, 6 accounts each)."""
    with SandboxServer(customers=3, accounts_per_customer=6, transactions_per_account=400, seed=42) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session sandbox, reset to its startup state (knobs, faults, counters, consents, tokens)."""
    sandbox_server.reset()
    return sandbox_server
