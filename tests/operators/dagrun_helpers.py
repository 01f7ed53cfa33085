"""Run a DAG defined in a test with ``dag.test()`` and read back task states and XComs.

``dag.test()`` only syncs DAGs found in the DAG bundle, so a DAG built inside a test is written
to the metadata DB first (as the DAG processor would).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

UTC = dt.timezone.utc


def daily_dag(dag_id: str) -> Any:
    """A DAG with real daily data intervals [00:00, 24:00) UTC (the example DAGs' timetable)."""
    from airflow.sdk import DAG
    from airflow.timetables.interval import CronDataIntervalTimetable

    return DAG(
        dag_id,
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=dt.datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
    )


@dataclass
class DagRunResult:
    dagrun: Any
    states: dict[str, str]
    xcoms: dict[str, Any]
    tries: dict[str, int]


def sync_dag(dag: Any) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def run_dag(dag: Any, logical_date: dt.datetime) -> DagRunResult:
    """``dag.test()`` one run; return its task states, tries and ``return_value`` XComs."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    sync_dag(dag)
    dagrun = dag.test(logical_date=logical_date)
    states: dict[str, str] = {}
    tries: dict[str, int] = {}
    xcoms: dict[str, Any] = {}
    with create_session() as session:
        for ti in dagrun.get_task_instances(session=session):
            states[ti.task_id] = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
            tries[ti.task_id] = ti.try_number
        rows = (
            session.query(XComModel)
            .filter(XComModel.run_id == dagrun.run_id, XComModel.dag_id == dag.dag_id)
            .filter(XComModel.key == "return_value")
            .all()
        )
        for row in rows:
            xcoms[row.task_id] = XComModel.deserialize_value(row)
    return DagRunResult(dagrun, states, xcoms, tries)
