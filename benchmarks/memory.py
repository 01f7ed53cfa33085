"""3. Memory: peak RSS of one extraction task at 10k, 100k and 1M transactions.

Every measurement is a separate child process that imports what a task imports, extracts one
account of N transactions (pages of 500) and reports its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its RSS just before the extraction started:

* **provider** -- ``OpenBankingTransactionsOperator.execute()`` landing gzip JSON Lines (the
  default format) to a local directory (the hook holds one page at a time; the writer compresses
  and flushes every 256 KiB).
* **parquet** -- the same task with ``file_format="parquet"``: records converted to Arrow as pages
  arrive, a row group written every ``landing.PARQUET_ROW_GROUP_ROWS`` rows.
* **HttpOperator** -- ``apache-airflow-providers-http``'s ``HttpOperator`` on the same endpoint
  with a ``pagination_function`` that follows ``page.nextOffset`` (the documented way to page);
  it returns every page's text, so every page stays in memory until the task ends.

The figures are the growth of peak RSS from the smallest to the largest size, median of
``Sizes.memory_runs`` processes per size, for each landing format; the HttpOperator's growth is the
comparison.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from benchmarks.common import (
    FDX,
    HTTP_CONN_ID,
    SPAN_LAST_DAY,
    SPAN_START,
    Figure,
    Section,
    Sizes,
    access_token,
    conn_env,
    consent_env,
    median,
    run_child,
    say,
    sized_sandbox,
    spread,
    transactions_operator,
)

TARGET_MB = 15.0
MB = 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # Linux: KiB


def child(p: dict[str, Any]) -> dict[str, Any]:
    import psutil

    account, kind = p["account"], p["kind"]
    if kind in ("provider", "parquet"):
        op: Any = transactions_operator(
            f"memory-{kind}-{p['n']}",
            account_ids=[account],
            file_format="parquet" if kind == "parquet" else None,
        )
    else:
        from airflow.providers.http.operators.http import HttpOperator

        def next_page(response: Any) -> dict[str, Any] | None:
            offset = (response.json().get("page") or {}).get("nextOffset")
            return {"data": {"offset": offset}} if offset else None

        op = HttpOperator(
            task_id="http_transactions",
            http_conn_id=HTTP_CONN_ID,
            method="GET",
            endpoint=f"{FDX}/accounts/{account}/transactions",
            data={"startTime": SPAN_START, "endTime": SPAN_LAST_DAY, "limit": p["page_size"]},
            headers={"Authorization": f"Bearer {p['token']}", "Accept": "application/json"},
            pagination_function=next_page,
        )
    rss_before = psutil.Process().memory_info().rss / MB
    peak_before = _peak_rss_mb()
    t0 = time.perf_counter()
    out = op.execute({})
    wall = time.perf_counter() - t0
    if kind in ("provider", "parquet"):
        records = int(out["records"])
    else:  # the list of page texts the operator would push to XCom
        records = sum(text.count('"transactionId"') for text in out)
    return {
        "peak_mb": _peak_rss_mb(),
        "rss_before_mb": rss_before,
        "peak_before_mb": peak_before,
        "records": records,
        "wall": wall,
    }


def run(sizes: Sizes) -> Section:
    kinds = ("provider", "parquet", "http")
    say(
        f"memory: peak RSS at {', '.join(f'{n:,}' for n in sizes.memory_sizes)} transactions, "
        f"provider (jsonl.gz, parquet) vs HttpOperator, {sizes.memory_runs} processes each"
    )
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with sized_sandbox(sizes.memory_sizes, sizes.page_size) as (sb, per_account):
        refresh = sb.grant_consent()
        env = {
            **consent_env(sb, sizes.page_size, refresh),
            **conn_env(HTTP_CONN_ID, f'{{"conn_type": "http", "host": "{sb.url}"}}'),
        }
        for rep in range(sizes.memory_runs):
            for account, n in per_account.items():
                for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                    res = run_child(
                        "benchmarks.memory:child",
                        {
                            "env": env,
                            "kind": kind,
                            "account": account,
                            "n": n,
                            "token": access_token(sb.url, refresh),  # fresh: the runs outlast one
                            "page_size": sizes.page_size,
                        },
                        log_name=f"memory-{kind}",
                        timeout=900,
                    )
                    results.setdefault((kind, n), []).append(res)
                    say(
                        f"memory: {kind} {n:,} -> {res['records']:,} records, peak {res['peak_mb']:.0f} MB "
                        f"in {res['wall']:.1f} s"
                    )
    small, large = sizes.memory_sizes[0], sizes.memory_sizes[-1]
    peak = {key: median(r["peak_mb"] for r in rows) for key, rows in results.items()}
    growth = {kind: peak[(kind, large)] - peak[(kind, small)] for kind in kinds}
    lines = [
        f"Peak RSS (MB) of one task process, median of {sizes.memory_runs}; 'before' is the RSS after "
        "imports and operator construction, just before `execute()`.",
        "",
        "| transactions | task | peak | before | time |",
        "|---|---|---|---|---|",
    ]
    names = {"provider": "provider, jsonl.gz", "parquet": "provider, parquet", "http": "HttpOperator"}
    for n in sizes.memory_sizes:
        for kind in kinds:
            rows = results[(kind, n)]
            lines.append(
                f"| {n:,} | {names[kind]} | {peak[(kind, n)]:.1f} ({spread(r['peak_mb'] for r in rows)}) "
                f"| {median(r['rss_before_mb'] for r in rows):.1f} | {median(r['wall'] for r in rows):.1f} s |"
            )
    lines += [
        "",
        f"Growth from {small:,} to {large:,} transactions: provider **{growth['provider']:+.1f} MB** "
        f"(jsonl.gz), **{growth['parquet']:+.1f} MB** (parquet), HttpOperator **{growth['http']:+.1f} MB** "
        f"({growth['http'] / max(growth['provider'], 1.0):.0f}x the provider's).",
    ]
    figures = [
        Figure(
            name=f"3. Memory: growth of peak RSS, {small:,} -> {large:,} transactions (jsonl.gz)",
            value=f"{growth['provider']:+.1f} MB (peak {peak[('provider', large)]:.0f} MB at {large:,})",
            target=f"< {TARGET_MB:.0f} MB",
            met=growth["provider"] < TARGET_MB,
            baseline=f"same task at {small:,} transactions",
        ),
        Figure(
            name=f"3c. Memory: Parquet landing, growth of peak RSS, {small:,} -> {large:,} transactions",
            value=f"{growth['parquet']:+.1f} MB (peak {peak[('parquet', large)]:.0f} MB at {large:,})",
            target=f"< {TARGET_MB:.0f} MB",
            met=growth["parquet"] < TARGET_MB,
            baseline=f"same task at {small:,} transactions",
        ),
        Figure(
            name=f"3b. Memory: HttpOperator + pagination_function, {small:,} -> {large:,}",
            value=f"{growth['http']:+.1f} MB (peak {peak[('http', large)]:.0f} MB at {large:,})",
            target="comparison",
            met=None,
            baseline=f"same task at {small:,} transactions",
        ),
    ]
    return Section("3. Memory", figures, "\n".join(lines))
