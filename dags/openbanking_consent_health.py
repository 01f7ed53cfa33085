"""
### Open Banking: consent health, every day

Consents die quietly: Flinks drops a refresh token after 30 days without use, customers revoke
access at their bank, scopes get narrowed. This DAG notices before a dashboard goes stale. It
covers every consent of every listed ``openbanking`` connection (a connection is one client; its
consents are the ``default`` one of its ``refresh_token`` extra plus every consent in its consent
store, e.g. imported with `airflow-openbanking consents import`), mapped over shards of each connection's consents
(param `consents_per_shard`; `shards + 2` task instances per run, no task per consent):

1. **check_shard** (mapped over the shards) -- for each consent of the shard, on a few threads:
   a refresh grant (which by itself keeps an idle Flinks consent alive), then one cheap call per
   data cluster the connection needs (accounts, transactions of one day, statements of one day,
   contact, payment networks, customer); the shard's health records land as one JSON Lines file,
   `<landing destination>/consent_health/conn_id=<id>/interval=<data interval>/shard=K-of-N.jsonl`,
   one record per consent: `consent_id`, `state` (`ok`,
   `revoked` (602), `refresh_rejected`, `lapsed`, `scope_missing`, `no_consent`, `error`),
   `healthy`, `message`, `last_refresh_at` (last successful refresh), `idle_days` (unused before this
   check), `days_until_idle_lapse`, `confirmed_scopes` / `missing_scopes` / `unchecked_scopes`,
   `warnings`. A consent that had been idle for 23 days or more (param `warn_within_days`) is `ok`
   with a warning. No tokens, secrets or account numbers, in the record or in the log.
2. **report** -- runs after every check, landed or not: succeeds when every consent is healthy,
   otherwise fails with one summary line per unhealthy consent (`<conn_id>: <state>: <what to do>`,
   `<conn_id> consent <consent_id>: …` for a consent other than `default`).

Alerting is a standard `on_failure_callback` on **report**: here `LogNotifier`, which only logs.
Swap in `SlackNotifier` (`apache-airflow-providers-slack`) or `SmtpNotifier`
(`apache-airflow-providers-smtp`) with the same `{{ exception }}` message; see docs/consent-health.md.

The checks run in the pool `openbanking_api`. Params: `conn_ids` (list of connection ids; empty =
Variable `openbanking_conn_ids`, a JSON list, else `["openbanking_default"]`) and `warn_within_days`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_openbanking.consents.health import IDLE_LAPSE_DAYS, IDLE_WARN_DAYS
from airflow_provider_openbanking.example_dags_support import (
    POOL,
    SHARD_TASK_LABEL,
    default_args,
    resolve_conn_ids,
    shard_params,
    shard_plan,
)
from airflow_provider_openbanking.notifications.log import LogNotifier

log = logging.getLogger(__name__)

#: The alert: replace with e.g. SlackNotifier(slack_conn_id="slack_api_default", channel="#data-alerts",
#: text=ALERT_MESSAGE) or SmtpNotifier(to="data-team@example.com", subject=..., html_content=...).
ALERT_MESSAGE = "Open Banking consent health ({{ dag.dag_id }}, run {{ run_id }}) failed:\n{{ exception }}"
ALERT = LogNotifier(message=ALERT_MESSAGE)


@dag(
    dag_id="openbanking_consent_health",
    # Real daily intervals (`@daily` is a CronTriggerTimetable in Airflow 3: empty intervals); the
    # interval names the folder a run's records land in, and a rerun replaces them.
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,  # yesterday's health is not worth checking today
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=1),
    # One retry, 5 minutes on, no back-off: a check is cheap and tomorrow's run checks again.
    default_args=default_args(retries=1, retry_exponential_backoff=False),
    params={
        **shard_params("one check task", verb="checked"),
        "warn_within_days": Param(
            IDLE_WARN_DAYS,
            type="number",
            minimum=0,
            maximum=IDLE_LAPSE_DAYS,
            description="Warn when a consent had been idle so long that fewer days than this were "
            f"left before its {IDLE_LAPSE_DAYS}-day idle lapse.",
        ),
    },
    tags=["openbanking", "example", "consent"],
    doc_md=__doc__,
)
def openbanking_consent_health() -> None:
    @task
    def consent_conn_ids(params: dict[str, Any] | None = None) -> list[str]:
        """The connections this run checks."""
        return resolve_conn_ids((params or {}).get("conn_ids"))

    @task
    def plan_shards(conn_ids: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One entry per shard of every connection's consents."""
        return shard_plan(conn_ids, (params or {}).get("consents_per_shard"))

    @task(
        pool=POOL,
        map_index_template=SHARD_TASK_LABEL,
    )
    def check_shard(
        openbanking_conn_id: str,
        shard_index: int,
        shard_count: int,
        params: dict[str, Any] | None = None,
        data_interval_start: dt.datetime | None = None,
        data_interval_end: dt.datetime | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Refresh and probe every consent of the shard, land its records; never fails on a bad consent."""
        from airflow_provider_openbanking.example_dags_support import check_shard_health

        context: Any = get_current_context()
        context.update(
            openbanking_conn_id=openbanking_conn_id, shard_index=shard_index, shard_count=shard_count
        )
        if data_interval_start is None or data_interval_end is None:
            raise AirflowFailException("the run has no data interval")
        result = check_shard_health(
            openbanking_conn_id,
            shard_index,
            shard_count,
            interval_start=data_interval_start,
            interval_end=data_interval_end,
            warn_within_days=(params or {}).get("warn_within_days"),
            dag_id="openbanking_consent_health",
            run_id=run_id,
            data_interval_start=data_interval_start.isoformat(),
            data_interval_end=data_interval_end.isoformat(),
        )
        log.info(
            "%s shard %s of %s: %d consent(s), %d unhealthy -> %s",
            openbanking_conn_id,
            shard_index,
            shard_count,
            result["checked"],
            len(result["unhealthy"]),
            result["path"],
        )
        for warning in result["warnings"]:
            log.warning("%s", warning)
        return result

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, on_failure_callback=ALERT)
    def report(conn_ids: Any, records: Any) -> dict[str, Any]:
        """Fail with one line per unhealthy consent -- after every record has landed."""
        from airflow_provider_openbanking.consents.health import summarize_health

        summary = summarize_health(records, conn_ids)
        for warning in summary.warnings:
            log.warning("%s", warning)
        if not summary.ok:
            for line in summary.unhealthy:
                log.error("%s", line)
            raise AirflowFailException(summary.failure_message())
        log.info("All %d consent(s) of %d connection(s) healthy", summary.checked, len(summary.conn_ids))
        return summary.as_dict()

    conn_ids = consent_conn_ids()
    report(conn_ids, check_shard.expand_kwargs(plan_shards(conn_ids)))


openbanking_consent_health()
