"""OpenBankingTokenTrigger: serialization round trip and its events, against the sandbox (issue 4)."""

from __future__ import annotations

import asyncio
import time

from airflow.sdk._shared.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from airflow_provider_openbanking.triggers.openbanking import OpenBankingTokenTrigger, check_access_token


async def first_event(trigger: OpenBankingTokenTrigger):
    return await anext(trigger.run())


def test_serialization_round_trip():
    trigger = OpenBankingTokenTrigger("ob_conn", min_ttl=90, poll_interval=15, timeout_at=1_900_000_000.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_openbanking.triggers.openbanking.OpenBankingTokenTrigger"
    assert kwargs == {
        "openbanking_conn_id": "ob_conn",
        "min_ttl": 90.0,
        "poll_interval": 15.0,
        "timeout_at": 1_900_000_000.5,
    }
    # what the scheduler stores and the triggerer rebuilds (the same path dag.test() takes)
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert OpenBankingTokenTrigger("c").serialize()[1]["timeout_at"] is None


def test_success_event_without_blocking_the_event_loop(openbanking_conn, sandbox):
    sandbox.configure(latency_ms=400)  # a slow bank: the check takes a while
    ticks = 0

    async def scenario():
        nonlocal ticks

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            return await first_event(OpenBankingTokenTrigger(openbanking_conn, min_ttl=60, poll_interval=1))
        finally:
            task.cancel()

    started = time.monotonic()
    event = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert event.payload["status"] == "success" and 200 < event.payload["ttl"] <= 300
    assert event.payload["short_lived"] is False
    assert elapsed >= 0.4
    # A blocked loop would tick 0 times (the ticker is cancelled as soon as the event arrives);
    # a few ticks prove the loop ran while the hook waited on the bank, whatever the machine's load.
    assert ticks >= 3, (ticks, elapsed)
    assert set(event.payload) == {"status", "ttl", "short_lived", "attempts"}  # never a token


def test_waits_then_times_out_without_consent(make_conn):
    conn_id = make_conn("ob_trigger_none", refresh_token="")
    started = time.monotonic()
    event = asyncio.run(
        first_event(OpenBankingTokenTrigger(conn_id, poll_interval=0.2, timeout_at=time.time() + 1.0))
    )
    assert 0.9 <= time.monotonic() - started < 5
    assert event.payload["status"] == "timeout"
    assert event.payload["attempts"] >= 3
    assert "no customer consent" in event.payload["message"] and "authorize" in event.payload["message"]


def test_error_event_when_waiting_cannot_help(make_conn, sandbox):
    conn_id = make_conn("ob_trigger_bad_client", password="wrong-secret")
    event = asyncio.run(
        first_event(OpenBankingTokenTrigger(conn_id, poll_interval=0.1, timeout_at=time.time() + 30))
    )
    assert event.payload["status"] == "error"
    assert "login/password" in event.payload["message"]
    assert "wrong-secret" not in event.payload["message"]


def test_short_lived_tokens_count_when_fresh(openbanking_conn, sandbox):
    sandbox.configure(access_token_ttl=15)
    check = check_access_token(openbanking_conn, min_ttl=600)
    assert check.ok and check.short_lived and 0 < check.ttl <= 15
