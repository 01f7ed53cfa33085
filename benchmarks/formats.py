"""7. Landing formats: bytes and client CPU per transaction for jsonl, jsonl.gz and parquet.

Every measurement is a separate child process that imports what a task imports and runs
``OpenBankingTransactionsOperator.execute()`` for one account of N transactions (pages of 500,
the sandbox's data, local ``file://`` destination) with ``file_format`` set, reporting:

* **bytes per transaction**: the landed file's size / the records in it;
* **client CPU per transaction**: the task process's user + system CPU time
  (``resource.getrusage(RUSAGE_SELF)``) spent in ``execute()`` / records -- HTTP, decoding,
  masking, encoding, compression and writing; the sandbox runs in its own process and is not
  counted.

The formats run interleaved (the order rotates from one repetition to the next),
``Sizes.formats_runs`` processes per format and size. Bytes do not vary between runs. CPU does: on
a shared machine CPU time grows with contention (caches, SMT siblings), so the figure is the
least disturbed run of each format (the minimum, as ``timeit`` reports), with the median beside it
in the details. The baseline is plain JSON Lines in the same run. The comparison is dlt 1.31's ``rest_api`` pipeline over the same sandbox pages, measured on
2026-12-01 (issue 18; dlt is not installed here): 5.1 MB for 100,115 transactions (51 bytes
each) and 41.7 MB for 1,001,205 (42 bytes each), gzip JSON Lines, its default.

Run alone: ``python -m benchmarks --only formats`` (or ``python -m benchmarks.formats``).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

from benchmarks.common import (
    Figure,
    Section,
    Sizes,
    consent_env,
    median,
    run_child,
    say,
    sized_sandbox,
    spread,
    transactions_operator,
)

FORMATS = ("jsonl", "jsonl.gz", "parquet")
#: dlt 1.31 rest_api, gzip JSON Lines, same sandbox pages, 2026-12-01 (issue 18).
DLT_BYTES = {100_000: 5.1e6 / 100_115, 1_000_000: 41.7e6 / 1_001_205}
CPU_TARGET = 1.3


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(p: dict[str, Any]) -> dict[str, Any]:
    op = transactions_operator(
        f"formats-{p['n']}-{p['format'].replace('.', '_')}",
        account_ids=[p["account"]],
        file_format=p["format"],
    )
    if p["format"] == "parquet":  # a task that lands Parquet imports pyarrow: not part of the figure
        import pyarrow.parquet  # noqa: F401
    cpu0, t0 = _cpu(), time.perf_counter()
    out = op.execute({})
    cpu, wall = _cpu() - cpu0, time.perf_counter() - t0
    (path,) = out["paths"]
    size = os.path.getsize(path[len("file://") :])
    return {"records": int(out["records"]), "bytes": size, "cpu": cpu, "wall": wall}


def run(sizes: Sizes) -> Section:
    counts = sizes.formats_sizes
    say(
        f"formats: {', '.join(FORMATS)} at {', '.join(f'{n:,}' for n in counts)} transactions, "
        f"{sizes.formats_runs} processes each"
    )
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with sized_sandbox(counts, sizes.page_size) as (sb, per_account):
        env = consent_env(sb, sizes.page_size)
        for rep in range(sizes.formats_runs):
            for account, n in per_account.items():
                order = FORMATS[rep % 3 :] + FORMATS[: rep % 3]
                for fmt in order:
                    res = run_child(
                        "benchmarks.formats:child",
                        {"env": env, "account": account, "n": n, "format": fmt},
                        log_name=f"formats-{fmt}",
                        timeout=900,
                    )
                    results.setdefault((fmt, n), []).append(res)
                    say(
                        f"formats: {fmt} {n:,} -> {res['records']:,} records, {res['bytes'] / res['records']:.1f} "
                        f"B/tx, {res['cpu'] / res['records'] * 1e6:.2f} µs CPU/tx, {res['wall']:.1f} s"
                    )
    bpt = {k: median(r["bytes"] / r["records"] for r in rows) for k, rows in results.items()}
    cpt = {k: min(r["cpu"] / r["records"] * 1e6 for r in rows) for k, rows in results.items()}
    cpt_median = {k: median(r["cpu"] / r["records"] * 1e6 for r in rows) for k, rows in results.items()}
    ratio = {k: cpt[k] / cpt[("jsonl", k[1])] for k in cpt}
    recs = {k: rows[0]["records"] for k, rows in results.items()}

    def dlt(n: int) -> float:
        return DLT_BYTES.get(n, min(DLT_BYTES.values()))

    lines = [
        f"One account per size, pages of {sizes.page_size}; {sizes.formats_runs} task processes per format "
        "and size. CPU is the task process's user + system time in `execute()` (pyarrow's base import "
        "excluded, the rest of a Parquet task's one-off costs -- ~50-70 ms -- included), the least "
        "disturbed run, median and range in brackets; the sandbox's own process is not counted. dlt: 1.31 `rest_api`, gzip JSON Lines (its default), "
        "same sandbox pages, measured 2026-12-01 (issue 18), not rerun here.",
        "",
        "| format | transactions | bytes / tx | vs dlt | CPU µs / tx: min (median, range) | vs jsonl (min) | vs jsonl (median) | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in counts:
        for fmt in FORMATS:
            rows = results[(fmt, n)]
            lines.append(
                f"| {fmt} | {recs[(fmt, n)]:,} | {bpt[(fmt, n)]:.1f} | {bpt[(fmt, n)] / dlt(n):.2f}x "
                f"| {cpt[(fmt, n)]:.2f} ({cpt_median[(fmt, n)]:.2f}, {spread(r['cpu'] / r['records'] * 1e6 for r in rows)}) "
                f"| {ratio[(fmt, n)]:.2f}x | {cpt_median[(fmt, n)] / cpt_median[('jsonl', n)]:.2f}x "
                f"| {median(r['wall'] for r in rows):.1f} s |"
            )
        lines.append(f"| dlt (gzip JSON Lines) | {n:,} | {dlt(n):.1f} | 1.00x | | | | |")
    from airflow_provider_openbanking.landing import GZIP_LEVEL, PARQUET_COMPRESSION, PARQUET_ROW_GROUP_ROWS

    lines += [
        "",
        f"Settings: gzip level {GZIP_LEVEL} (`landing.GZIP_LEVEL`); Parquet {PARQUET_COMPRESSION}, row groups "
        f"of {PARQUET_ROW_GROUP_ROWS:,} rows, typed columns per `schemas.DATASET_COLUMNS`.",
    ]
    plain_bytes = ", ".join(f"{bpt[('jsonl', n)]:.0f} B" for n in counts)
    plain_cpu = ", ".join(f"{cpt[('jsonl', n)]:.2f} µs" for n in counts)
    figures = []
    for fmt in ("jsonl.gz", "parquet"):
        values = ", ".join(f"{bpt[(fmt, n)]:.1f} B at {n:,}" for n in counts)
        targets = " / ".join(f"{dlt(n):.0f} B" for n in counts)
        figures.append(
            Figure(
                name=f"7. Landing size: {fmt} bytes per transaction",
                value=values,
                target=f"≤ dlt's ({targets})",
                met=all(bpt[(fmt, n)] <= dlt(n) for n in counts),
                baseline=f"plain jsonl: {plain_bytes}; dlt measured 2026-12-01",
            )
        )
    for fmt in ("jsonl.gz", "parquet"):
        figures.append(
            Figure(
                name=f"7b. Landing CPU: {fmt} / plain jsonl, client CPU per transaction (least disturbed run)",
                value=", ".join(f"{ratio[(fmt, n)]:.2f}x at {n:,}" for n in counts)
                + f" ({', '.join(f'{cpt[(fmt, n)]:.2f} µs' for n in counts)})",
                target=f"≤ {CPU_TARGET:.1f}x",
                met=all(ratio[(fmt, n)] <= CPU_TARGET for n in counts),
                baseline=f"plain jsonl, same run: {plain_cpu}",
            )
        )
    return Section("7. Landing formats", figures, "\n".join(lines))


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    section = run(Sizes.quick() if quick else Sizes())
    for figure in section.figures:
        print(f"{figure.name}: {figure.value} (target {figure.target}: {figure.verdict})")
    print()
    print(section.details)
