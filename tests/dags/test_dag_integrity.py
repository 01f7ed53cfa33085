"""DAG integrity: every file in ``dags/`` imports cleanly, quickly, with no network and no
metadata access at parse time, and the example DAGs keep the production settings they teach."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
EXPECTED_DAGS = {
    "openbanking_consent_health",
    "openbanking_accounts_transactions",
    "openbanking_statements",
    "openbanking_customer_profile",
    "openbanking_daily_summary",
}
POOL = "openbanking_api"
#: A warm re-parse of one DAG file (modules already imported) must stay under this: a file that
#: does real work at top level (API calls, Variable reads, file scans) would not.
WARM_PARSE_BUDGET_S = 0.5


class ParseTimeAccess(AssertionError):
    pass


@pytest.fixture(scope="module")
def parse_guard() -> Iterator[list[str]]:
    """Make any network connection, Variable read or Connection lookup fail, and record it."""
    from airflow.sdk import BaseHook, Variable

    calls: list[str] = []

    def refuse(what: str) -> Any:
        def _refuse(*args: Any, **kwargs: Any) -> Any:
            calls.append(f"{what}{args[1:2] or args[:1]}")
            raise ParseTimeAccess(f"{what} at DAG parse time")

        return _refuse

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse("socket.connect"))
    mp.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    mp.setattr(socket, "create_connection", refuse("socket.create_connection"))
    mp.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    mp.setattr(Variable, "get", refuse("Variable.get"))
    mp.setattr(BaseHook, "get_connection", refuse("BaseHook.get_connection"))
    try:
        import requests

        mp.setattr(requests.Session, "request", refuse("requests"))
    except ImportError:  # pragma: no cover
        pass
    try:
        yield calls
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def dagbag(parse_guard: list[str]) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_every_dag_file_imports_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert EXPECTED_DAGS <= set(dagbag.dag_ids)
    files = {Path(stat.file).name for stat in dagbag.dagbag_stats}
    assert files == {p.name for p in DAGS_DIR.glob("*.py")}, "every file in dags/ defines a DAG"


def test_parsing_makes_no_network_call_and_reads_no_variable_or_connection(
    dagbag: Any, parse_guard: list[str]
) -> None:
    assert dagbag.import_errors == {}
    assert parse_guard == []


def test_dag_files_do_no_top_level_work(dagbag: Any, parse_guard: list[str]) -> None:
    """Parse every file again (imports warm): each must take well under a second."""
    from airflow.dag_processing.dagbag import DagBag

    again = DagBag(dag_folder=str(DAGS_DIR))
    assert again.import_errors == {}
    slow = {s.file: s.duration.total_seconds() for s in again.dagbag_stats}
    assert all(seconds < WARM_PARSE_BUDGET_S for seconds in slow.values()), slow
    assert parse_guard == []


def test_dags_are_documented_owned_tagged_and_bounded(dagbag: Any) -> None:
    for dag_id in dagbag.dag_ids:
        dag = dagbag.get_dag(dag_id)
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        assert "openbanking" in dag.tags, dag_id
        assert dag.max_active_runs is not None and 1 <= dag.max_active_runs <= 5, dag_id
        for task in dag.tasks:
            assert task.owner != "airflow", (dag_id, task.task_id)


def _is_api_task(task: Any) -> bool:
    name = getattr(task, "operator_name", None) or type(task).__name__
    module = getattr(task, "_task_module", None) or type(task).__module__
    return name.startswith("OpenBanking") or "airflow_provider_openbanking" in str(module)


def test_every_api_task_runs_in_the_openbanking_pool(dagbag: Any) -> None:
    seen = 0
    for dag_id in dagbag.dag_ids:
        for task in dagbag.get_dag(dag_id).tasks:
            if _is_api_task(task):
                seen += 1
                assert task.pool == POOL, (dag_id, task.task_id, task.pool)
    assert seen >= 7


def test_main_dag_shape(dagbag: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.get_dag("openbanking_accounts_transactions")
    # Real daily intervals (Airflow 3's @daily would give start == end).
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"
    assert dag.catchup is True
    # No Variable read at parse time: the param defaults to "ask at run time".
    assert dag.params["conn_ids"] is None
    assert dag.params["warehouse_conn_id"] == "openbanking_warehouse"

    assert dag.params["consents_per_shard"] == 250

    tasks = {t.task_id: t for t in dag.tasks}
    # Mapped over shards, not consents nor accounts: 3 task instances per shard, 3 per run.
    mapped = {t for t, task in tasks.items() if task.get_closest_mapped_task_group() is not None}
    assert mapped == {"shard.land_accounts", "shard.land_transactions", "shard.load_transactions"}
    assert set(tasks) - mapped == {"plan_shards", "table_updated", "all_consents_ok"}
    assert not [t for t in tasks.values() if "Sensor" in type(t).__name__], "no per-consent sensor"
    accounts, transactions = tasks["shard.land_accounts"], tasks["shard.land_transactions"]
    assert type(accounts).__name__ == "OpenBankingAccountsOperator" and accounts.result_type == "details"
    assert transactions.accounts_from_landing is True, "account ids come from the landed accounts files"
    assert transactions.trigger_rule == "all_done"
    assert "shard.land_accounts" in transactions.upstream_task_ids
    assert {a.name for a in transactions.outlets} == {"openbanking_transactions_files"}
    load = tasks["shard.load_transactions"]
    assert load.trigger_rule == "all_done" and load.max_active_tis_per_dag == 1
    assert "shard.land_transactions" in load.upstream_task_ids
    table = tasks["table_updated"]
    assert {a.name for a in table.outlets} == {"openbanking_transactions"}
    assert table.trigger_rule == "all_done"
    final = tasks["all_consents_ok"]
    assert final.trigger_rule == "none_failed"
    assert "shard.load_transactions" in final.upstream_task_ids


def test_every_customer_dag_maps_over_shards(dagbag: Any) -> None:
    """Task instances per run do not grow with consents: every per-customer task is mapped over
    a shard plan, and a handful of tasks is not mapped."""
    for dag_id in (
        "openbanking_accounts_transactions",
        "openbanking_statements",
        "openbanking_customer_profile",
        "openbanking_consent_health",
    ):
        dag = dagbag.get_dag(dag_id)
        assert "plan_shards" in dag.task_dict, dag_id
        assert dag.params["consents_per_shard"] >= 100, dag_id
        assert dag.params["conn_ids"] is None, dag_id  # no Variable read when the DAG is parsed
        assert "openbanking_conn_ids" in dag.params.get_param("conn_ids").description, dag_id
        assert dag.default_args["owner"] == "data-engineering", dag_id
        unmapped = [
            t.task_id
            for t in dag.tasks
            if not getattr(t, "is_mapped", False) and t.get_closest_mapped_task_group() is None
        ]
        assert len(unmapped) <= 3, (dag_id, unmapped)
        for task in dag.tasks:
            if _is_api_task(task):
                assert task.is_mapped or task.get_closest_mapped_task_group() is not None, (dag_id, task)


def test_the_shared_dag_pieces_are_fresh_and_take_overrides() -> None:
    from airflow_provider_openbanking.example_dags_support import (
        POOL,
        SHARD_LABEL,
        SHARD_WORKERS,
        default_args,
        shard_operator_args,
        shard_params,
    )

    first = default_args()
    first["retries"] = 99  # what one DAG does to its dict does not reach another's
    assert default_args()["retries"] == 3 and default_args(retries=1)["retries"] == 1
    assert default_args(retries=1)["owner"] == "data-engineering"
    params = shard_params("one check task", verb="checked")
    assert set(params) == {"conn_ids", "consents_per_shard"}
    assert "every consent of each is checked" in params["conn_ids"].description
    assert params["consents_per_shard"].description == "About how many consents one check task covers."
    assert shard_operator_args(shard_index=2) == {
        "shard_index": 2,
        "max_workers": SHARD_WORKERS,
        "pool": POOL,
        "map_index_template": SHARD_LABEL,
    }


def test_summary_dag_is_scheduled_on_the_transactions_asset(dagbag: Any) -> None:
    dag = dagbag.get_dag("openbanking_daily_summary")
    names = {asset.name for asset in dag.timetable.asset_condition.objects}
    assert names == {"openbanking_transactions"}


def test_dag_files_import_quickly_in_a_fresh_interpreter() -> None:
    """Cold import cost of the DAG files beyond Airflow's own (``airflow.sdk``) stays small."""
    import subprocess
    import sys

    files = sorted(str(p) for p in DAGS_DIR.glob("*.py"))
    code = (
        "import time, runpy, sys\n"
        "import airflow.sdk, airflow.sdk.bases.operator\n"
        "t = time.perf_counter()\n"
        "for f in sys.argv[1:]:\n"
        "    runpy.run_path(f)\n"
        "print(time.perf_counter() - t)\n"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *files], capture_output=True, text=True, check=True, timeout=120
    )
    seconds = float(out.stdout.strip().splitlines()[-1])
    assert seconds < 2.0, f"importing the DAG files took {seconds:.2f}s beyond airflow.sdk"
    assert time.perf_counter() - started < 60


@pytest.mark.parametrize(
    ("statement", "seen"),
    [
        ("import requests; requests.get('http://127.0.0.1:9/accounts', timeout=1)", "requests"),
        ("import socket; socket.create_connection(('127.0.0.1', 9))", "socket.create_connection"),
        ("from airflow.sdk import Variable; Variable.get('openbanking_conn_ids')", "Variable.get"),
        (
            "from airflow.sdk import BaseHook; BaseHook.get_connection('openbanking_default')",
            "get_connection",
        ),
    ],
)
def test_the_guard_catches_a_dag_file_that_works_at_parse_time(
    tmp_path: Path, parse_guard: list[str], statement: str, seen: str
) -> None:
    """The checks above would see a DAG file that calls out or reads metadata at top level."""
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "bad_dag.py").write_text(
        "import datetime as dt\n"
        "from airflow.sdk import DAG\n"
        f"{statement}\n"
        "with DAG('bad', schedule=None, start_date=dt.datetime(2026, 1, 1)):\n"
        "    pass\n"
    )
    before = len(parse_guard)
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors, "a DAG file doing work at parse time must fail under the guard"
    assert any(seen in call for call in parse_guard[before:]), parse_guard[before:]
    del parse_guard[before:]
