"""Eight task processes, one connection, several consents, rotating refresh tokens, the SQL store.

Real processes (``spawn``: a fresh interpreter each, as a worker runs a task), a real SQL database
(SQLite file, and PostgreSQL when installed) and the sandbox rotating every refresh token with no
grace period, so a token used twice is an ``invalid_grant``. Every process:

1. asks for an access token of every consent at once (the barrier lines them up): the store's
   refresh lease lets one process per consent make the grant, the others use the token it stored;
2. then forces a refresh grant of every consent (what the health check's keep-alive does), all
   eight at once: the lease serialises them, each uses the newest refresh token.

Afterwards: 0 ``invalid_grant``, one grant per consent in step 1, and every consent still works
from a fresh process (none was lost).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_provider_openbanking.consents import ConsentRecord, fingerprint
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache

pytestmark = pytest.mark.slow

CONSENTS = ("cust-a", "cust-b", "cust-c")
PROCESSES = 8


def _worker(env: dict[str, str], barrier: Any, queue: Any) -> None:  # pragma: no cover - child
    os.environ.update(env)
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook as Hook

    try:
        hook = Hook("ob_race")
        hooks = {c: hook.for_consent(c) for c in CONSENTS}
        barrier.wait(300)
        first = {c: h.get_access_token() for c, h in hooks.items()}
        barrier.wait(300)
        for h in hooks.values():
            h.refresh_access_token()
        queue.put(("ok", {c: fingerprint(t) for c, t in first.items()}))
    except Exception as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.fixture(params=["sqlite", "postgres"])
def sql_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'race.db'}"
        return
    from e2e.services import ServiceError, start_postgres

    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail("psycopg2 is not installed: `make pytest` installs it with the [dev] extra")
    try:
        service = start_postgres(tmp_path / "pg")
    except ServiceError as exc:
        pytest.fail(f"PostgreSQL did not start ({exc}); `make pytest` installs it with apt")
    with service:
        yield service.create_database("race").replace("postgresql://", "postgres://")


def test_eight_processes_rotating_three_consents_on_the_sql_store(
    sandbox: Any, make_conn: Any, sql_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.configure(rotate_refresh_tokens=True, refresh_grace_seconds=0)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", key)
    monkeypatch.setenv("AIRFLOW_CONN_OB_RACE_DB", sql_uri)
    conn_id = make_conn("ob_race", refresh_token="", consent_store_conn_id="ob_race_db", rotation_wait=5)
    hook = OpenBankingHook(conn_id)
    store = hook.consent_store
    customers = ("cust-0001", "cust-0002", "cust-0003")
    store.save_many(
        ConsentRecord(conn_id, c, refresh_token=sandbox.grant_consent(cust), origin=None)
        for c, cust in zip(CONSENTS, customers, strict=True)
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("AIRFLOW", "NO_PROXY", "no_proxy", "PATH", "PYTHON", "HOME"))
    }
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(env, barrier, queue)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=400) for _ in procs]
    for p in procs:
        p.join(30)
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors

    counters = sandbox.counters()
    assert counters["invalid_grant"] == 0, counters
    # step 1: every process got the same access token per consent, from one grant per consent
    for consent in CONSENTS:
        assert len({r[1][consent] for r in results}) == 1, consent
    # step 1 made 3 grants, step 2 one forced grant per process and consent
    assert counters["token_grants"]["refresh_token"] == len(CONSENTS) * (1 + PROCESSES), counters

    # no consent lost: a fresh process works from what the store holds now
    clear_token_cache()
    issued = sandbox.issued_secrets()["refresh_tokens"]
    fresh = OpenBankingHook(conn_id)
    for consent, customer in zip(CONSENTS, customers, strict=True):
        record = store.load(conn_id, consent)
        assert record is not None and record.state == "active" and record.refresh_token in issued
        h = fresh.for_consent(consent)
        h.refresh_access_token()
        ids = {a["accountId"] for a in h.iter_accounts()}
        assert ids == {a["accountId"] for a in sandbox.truth_accounts(customer)}
    assert sandbox.counters()["invalid_grant"] == 0
    json.dumps(results)  # nothing but fingerprints crossed the process boundary
