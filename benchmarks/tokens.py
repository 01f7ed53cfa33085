"""4. Token economy: token requests per DAG run, with 300 s and with 5 s access tokens.

A DAG run shaped like the example DAG ``openbanking_accounts_transactions``: ``wait_for_consent``
(``OpenBankingTokenSensor.poke``), then ``land_accounts`` (``OpenBankingAccountsOperator``,
details), then one ``land_transactions`` task per account (``OpenBankingTransactionsOperator``
with ``account_ids=[account]``: the mapped tasks), run in parallel. Each task runs in its own
process, forked from a driver that has Airflow imported but has never touched the hook -- which is
how Airflow runs task instances (the access-token cache is per process, so nothing is shared
between tasks). The sandbox adds ``Sizes.token_latency_ms`` per request so that each transactions
task pages for several 5 s token lifetimes.

The sandbox's ``token_grants`` counter (refresh grants) is read before and after each DAG run.
The bound is ``sum over task processes of ceil(task duration / token lifetime)``: one token per
task process per token lifetime. The figure is ``token requests / bound`` (median over
``Sizes.token_runs`` DAG runs per lifetime).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CONN_ID,
    RUNS_DIR,
    SPAN_END_EXCLUSIVE,
    SPAN_START,
    Figure,
    Section,
    Sizes,
    consent_env,
    median,
    run_child,
    sandbox,
    say,
)

LIFETIMES = (300, 5)


def _task_process(name: str, make: Any, out: Path) -> int:
    """Fork one task process: it runs ``make()()``, counts its refresh grants, writes ``out``."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

        grants = 0
        real_refresh = OpenBankingHook._refresh_access_token

        def counting_refresh(self: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal grants
            grants += 1
            return real_refresh(self, *args, **kwargs)

        OpenBankingHook._refresh_access_token = counting_refresh  # type: ignore[method-assign]
        t0 = time.perf_counter()
        make()
        out.write_text(json.dumps({"task": name, "duration": time.perf_counter() - t0, "grants": grants}))
        code = 0
    except BaseException as exc:  # report, never return into the driver's code in a fork
        out.write_text(json.dumps({"task": name, "error": repr(exc)}))
    finally:
        os._exit(code)


def child(p: dict[str, Any]) -> dict[str, Any]:
    import requests

    from airflow_provider_openbanking.operators.openbanking import (
        OpenBankingAccountsOperator,
        OpenBankingTransactionsOperator,
    )
    from airflow_provider_openbanking.sensors.openbanking import OpenBankingTokenSensor

    admin = requests.Session()
    admin.trust_env = False
    url = p["url"]
    scratch = RUNS_DIR / "tokens"
    scratch.mkdir(parents=True, exist_ok=True)

    def grants() -> int:
        counters = admin.get(f"{url}/_admin/counters", timeout=30).json()
        return int(counters["token_grants"]["refresh_token"])

    def dag_run(run_id: str) -> list[dict[str, Any]]:
        dest = str(RUNS_DIR / "landing" / "tokens" / run_id)
        sensor = OpenBankingTokenSensor(task_id="wait_for_consent", openbanking_conn_id=CONN_ID)
        accounts = OpenBankingAccountsOperator(
            task_id="land_accounts", openbanking_conn_id=CONN_ID, result_type="details", destination=dest
        )
        mapped = [
            OpenBankingTransactionsOperator(
                task_id="land_transactions",
                openbanking_conn_id=CONN_ID,
                account_ids=[account],
                start_time=SPAN_START,
                end_time=SPAN_END_EXCLUSIVE,
                lookback=0,
                destination=dest,
            )
            for account in p["accounts"]
        ]
        stages: list[list[tuple[str, Any]]] = [
            [("wait_for_consent", lambda: sensor.poke({}))],
            [("land_accounts", lambda: accounts.execute({}))],
            [(f"land_transactions[{i}]", lambda op=op: op.execute({})) for i, op in enumerate(mapped)],
        ]
        done: list[dict[str, Any]] = []
        for stage in stages:
            running = []
            for name, make in stage:
                out = scratch / f"{run_id}-{name}.json"
                out.unlink(missing_ok=True)
                running.append((_task_process(name, make, out), out))
            for pid, out in running:
                os.waitpid(pid, 0)
                result = json.loads(out.read_text())
                if "error" in result:
                    raise RuntimeError(f"task {result['task']} failed: {result['error']}")
                done.append(result)
        return done

    results: list[dict[str, Any]] = []
    for ttl in p["lifetimes"]:
        admin.post(f"{url}/_admin/config", json={"access_token_ttl": ttl}, timeout=30).raise_for_status()
        for rep in range(p["runs"]):
            before = grants()
            t0 = time.perf_counter()
            tasks = dag_run(f"ttl{ttl}-{rep}")
            results.append(
                {
                    "ttl": ttl,
                    "wall": time.perf_counter() - t0,
                    "grants": grants() - before,
                    "tasks": tasks,
                    "bound": sum(max(1, math.ceil(t["duration"] / ttl)) for t in tasks),
                }
            )
    return {"runs": results}


def run(sizes: Sizes) -> Section:
    n_tasks = 2 + sizes.token_transaction_accounts
    say(
        f"token economy: DAG runs of {n_tasks} task processes, tokens of {LIFETIMES} s, "
        f"{sizes.token_runs} runs each"
    )
    with sandbox(
        customers=1,
        accounts_per_customer=sizes.token_transaction_accounts,
        transactions_per_account=sizes.token_transactions,
        latency_ms=sizes.token_latency_ms,
    ) as sb:
        accounts = [a["accountId"] for a in sb.truth_accounts()]
        res = run_child(
            "benchmarks.tokens:child",
            {
                "env": consent_env(sb, sizes.token_page_size),
                "url": sb.url,
                "accounts": accounts,
                "lifetimes": list(LIFETIMES),
                "runs": sizes.token_runs,
            },
            log_name="tokens",
            timeout=1200,
        )
    runs = res["runs"]
    lines = [
        f"A DAG run = `wait_for_consent` -> `land_accounts` -> {sizes.token_transaction_accounts} x "
        f"`land_transactions` in parallel: {n_tasks} task processes; {sizes.token_transactions:,} "
        f"transactions per account in pages of {sizes.token_page_size}, {sizes.token_latency_ms:.0f} ms "
        "per request.",
        "",
        "| token lifetime | DAG run | token requests (sandbox) | bound: sum of ceil(task time / lifetime) | per task: time (s) / tokens |",
        "|---|---|---|---|---|",
    ]
    figures: list[Figure] = []
    for ttl in LIFETIMES:
        rows = [r for r in runs if r["ttl"] == ttl]
        for i, r in enumerate(rows):
            tasks = ", ".join(f"{t['task']} {t['duration']:.1f}/{t['grants']}" for t in r["tasks"])
            lines.append(
                f"| {ttl} s | {i + 1} ({r['wall']:.1f} s) | {r['grants']} | {r['bound']} | {tasks} |"
            )
        grants = median(r["grants"] for r in rows)
        bound = median(r["bound"] for r in rows)
        ratio = median(r["grants"] / r["bound"] for r in rows)
        figures.append(
            Figure(
                name=f"4. Token economy: token requests per DAG run, {ttl} s tokens",
                value=f"{grants:.0f} per run ({ratio:.2f} of the bound {bound:.0f})",
                target="≤ 1 per task process per lifetime (ratio ≤ 1.00)",
                met=all(r["grants"] <= r["bound"] for r in rows),
                baseline=f"{n_tasks} task processes x ceil(duration / {ttl} s)",
            )
        )
        say(f"token economy: {ttl} s tokens -> {grants:.0f} token requests per DAG run (bound {bound:.0f})")
    ttl = LIFETIMES[-1]
    long_tasks = [t for r in runs if r["ttl"] == ttl for t in r["tasks"] if t["duration"] >= 2 * ttl]
    if long_tasks:
        durations = [t["duration"] for t in long_tasks]
        per_lifetime = median(t["grants"] / (t["duration"] / ttl) for t in long_tasks)
        lines += [
            "",
            f"The `land_transactions` tasks last {min(durations):.1f}-{max(durations):.1f} s "
            f"({median(durations) / ttl:.1f} lifetimes of {ttl} s) and ask for "
            f"{median(t['grants'] for t in long_tasks):.0f} tokens each ({per_lifetime:.2f} per lifetime). "
            "The hook replaces a cached token once it has less than min(30 s, lifetime / 10) left "
            f"({min(30.0, ttl / 10):g} s here), so a token serves 9/10 of its lifetime and a task asks for "
            "1 + floor(duration / (0.9 x lifetime)) tokens. Threads share one token: in benchmark 2 every "
            "run, 8 workers included, used the process's single token.",
        ]
    return Section("4. Token economy", figures, "\n".join(lines))
