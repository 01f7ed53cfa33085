"""Fixtures of the fault matrix (issue 8): a small dedicated sandbox, consents, one baseline run.

Every test module here is marked ``faults`` (``pytest -m faults``). The sandbox is small on purpose --
3 customers x 3 accounts, ~20 transactions per account in a run's window -- and connections ask
for pages of 5, so every account is paginated and a fault can land mid-pagination.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking.hooks.openbanking import clear_token_cache
from airflow_provider_openbanking.sandbox.testing import SandboxServer
from tests.faults.harness import (
    CONSENTS,
    DAG_ID,
    POOL,
    SANDBOX_OPTIONS,
    Consents,
    Env,
    Outcome,
    make_consents,
    reset_sandbox,
    run_main,
    use_env,
)


@pytest.fixture(scope="package")
def fault_server() -> Iterator[SandboxServer]:
    with SandboxServer(**SANDBOX_OPTIONS) as server:
        yield server


@pytest.fixture
def fsb(fault_server: SandboxServer) -> Iterator[SandboxServer]:
    """The fault sandbox reset to its startup state, the bank clock just after the run's interval."""
    reset_sandbox(fault_server)
    yield fault_server
    clear_token_cache()


@pytest.fixture(scope="package")
def dagbag() -> Any:
    """The example DAGs of ``dags/`` (and the pool their API tasks run in)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(POOL, 8, "Open Banking API calls", include_deferred=False)
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="package")
def _parsed_main_dag(dagbag: Any) -> Any:
    return dagbag.get_dag(DAG_ID)


@pytest.fixture
def main_dag(_parsed_main_dag: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``openbanking_accounts_transactions`` as parsed from ``dags/``, its retries (3, from 2
    minutes up) waiting 0.3 s instead, so a task that fails is retried within the test."""
    for task in _parsed_main_dag.tasks:
        monkeypatch.setattr(task, "retry_delay", dt.timedelta(seconds=0.3))
        monkeypatch.setattr(task, "retry_exponential_backoff", 0)
    return _parsed_main_dag


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A fresh warehouse database and landing directory for this test's runs."""
    return use_env(monkeypatch.setenv, tmp_path)


@pytest.fixture
def consent(fsb: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Consents:
    return make_consents(fsb, monkeypatch.setenv)


@pytest.fixture(scope="package")
def baseline(
    fault_server: SandboxServer, _parsed_main_dag: Any, tmp_path_factory: pytest.TempPathFactory
) -> Outcome:
    """The fault-free run every faulted run is compared with (all three consents)."""
    reset_sandbox(fault_server)
    with pytest.MonkeyPatch.context() as mp:
        env = use_env(mp.setenv, tmp_path_factory.mktemp("baseline"))
        make = make_consents(fault_server, mp.setenv)
        outcome = run_main(_parsed_main_dag, env, [make(conn_id) for conn_id in CONSENTS])
    clear_token_cache()
    assert outcome.ok, outcome.problems
    assert len(outcome.transactions("success")) == 9
    assert {row[0] for row in outcome.table} == set(CONSENTS)
    assert len(outcome.table) > 100
    return outcome
