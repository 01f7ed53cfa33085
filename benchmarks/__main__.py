"""``python -m benchmarks [--quick] [--only throughput,latency,...] [--output PATH]``.

Runs the benchmarks one after the other, prints each figure as it comes, and writes the results
table, the machine it ran on and the details of every benchmark to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_DIR, RUNS_DIR, Figure, Section, Sizes, say

MODULES = (
    "throughput",
    "latency",
    "memory",
    "tokens",
    "parse",
    "hotpath",
    "consents",
    "scale",
    "formats",
    "moonshot",
)

#: Why a target is not met, shown under the table only for the figures that miss theirs.
WHY_NOT_MET = {
    "1.": (
        "**Throughput.** The bare loop does no per-record work by construction; the operator must "
        "decode, unwrap, mask, encode and write every transaction, about 3 µs each (*Where the time "
        "goes*: ~1.5 ms per page of 500 chained, plus the generator chain), which on loopback is more "
        "than the round trip itself (~1.1-1.4 ms a page from the sandbox's cache). No Python client "
        "that turns each transaction into a dict can come within 10% of a loop that never parses the "
        "body; the remaining cost is that per-record work, spread over C-level decoding/encoding and a "
        "few Python calls per record. Against a network (1b: 20 ms per request) the same work is a "
        "small fraction of each page's time."
    ),
    "4.": (
        "**Token economy, short tokens.** The hook replaces a cached token once it has less than "
        "min(30 s, lifetime / 10) left, so with 5 s tokens a token serves 4.5 s and a task of 2-3 "
        "lifetimes asks for one more token than ceil(duration / lifetime). With 300 s tokens every "
        "task process asks for exactly one, and threads share it (benchmark 2). Meeting the target "
        "for 5 s tokens would mean using tokens closer to their expiry (a smaller skew for short "
        "lifetimes), at the risk of 401s and replays mid-pagination -- a decision for the hook."
    ),
    "5.": (
        "**Parse cost.** An empty DAG costs ~8 ms to parse; any DAG with a task already costs ~4x "
        "that (the reference one-task DAG: Airflow's own lazily imported decorators and the "
        "serialiser's dependency detection). The example DAGs add the provider's import chain on "
        "every parse (the DAG processor pre-imports only `airflow.*` modules): operators -> hook -> "
        "requests/urllib3/charset_normalizer, tenacity, transport, landing -- about 50-70 ms here -- "
        "and their own definitions (up to ~20 ms warm for 7 tasks, mapping, assets). Importing the hook and "
        "`requests` lazily in the operators and the sensor (at execute time) would remove most of the "
        "import share; ≤ 1.2x an empty DAG is out of reach for any DAG with tasks."
    ),
    "C1.": (
        "**Consents, Variable store.** Variables have no conditional write, so the refresh lease is "
        "write-settle-verify: under load two processes can both take it, and a consent gets a second "
        "refresh grant. The SQL store's compare-and-swap is atomic (exactly one grant per consent)."
    ),
    "moonshot:": (
        "**The moonshot, wall time and load step.** Requests and refresh grants are at the floor; the "
        "time is not. (a) A shard is three task instances in sequence (accounts, transactions, load), "
        "and each start of a task process (fork, DAG parse, Execution API round trips) costs seconds on "
        "2 shared cores during which the shard sends nothing; (b) the load tasks run one at a time "
        "(`max_active_tis_per_dag=1`: runs and shards overlap in their windows), after the shards' "
        "transactions, so the run ends with a serial tail of shards x load time; (c) the client paces "
        "itself at 0.9 x the bank's limit, so 1.11x is the least this set-up can show. The load step is "
        "CPU per record, not the database: a cProfile of one shard's load (1,295 windows, ~34 "
        "transactions each, SQLite) puts ~85% of it in building the rows (`warehouse.transaction_row`: "
        "type checks, date parsing) and reading the gzip files, ~13% in SQL -- about 2.5 ms a window "
        "in a process of its own, about 6 ms in the load task on PostgreSQL (7-8 ms under a load average "
        "of 5-13); on SQLite the same step is 1.5 ms (scale benchmark, target met). Meeting both targets would need the "
        "load to overlap the landing (load each shard's consents as they land, or let loads of "
        "disjoint consents run in parallel) and a cheaper row builder (msgspec-typed records)."
    ),
    "C2.": (
        "**Consent store cost.** A batch read is one pass (memory) or one query per 500 ids (metadata "
        "DB); decoding (and for Variables decrypting) larger batches still costs a little more per "
        "consent, staying under 0.5 ms per consent at 10,000. Use the SQL store for thousands."
    ),
}

OPTIMISATIONS = """\
Measured during the work on issue 7 with this harness (same machine, load average about 1), before
and after each change:

| change | before | after |
|---|---|---|
| sandbox: LRU cache of rendered transaction pages (`sandbox/routers/fdx.py`, 64 MB, keyed by account, count, clock, window, offset, limit) | 3.3-3.8 ms sandbox CPU per page of 500 (rendering, ~6 µs a transaction): the "bare loop" measured the sandbox (4.2 ms a page, of which 0.8 ms client) | 0.35-0.5 ms per page on a hit; the bare loop runs at 1.1-1.4 ms a page, so benchmark 1 measures the client |
| `fdx.mask_account_numbers`: flat records (every transaction) are copied in C (`dict.copy`) after one C-level type scan of their values, instead of a Python loop with `isinstance(value, Mapping)` ABC checks on every field | 2.8 µs a transaction; operator path 3.76x the bare loop (99,800 tx/s) | 0.47 µs a transaction; operator path 2.95x the bare loop (125,900 tx/s) |

Tried and left out:

* **Read-ahead in `pagination.paginate`** (fetch page *n + 1* in a background thread while the
  caller consumes page *n*): no measurable gain, at 0 or 20 ms per request. The consumer holds the
  GIL for its ~3 ms of per-page work, less than the interpreter's 5 ms switch interval, so the
  background thread could not even send its request before the consumer blocked on it. Reverted.
* **`msgspec.json.Encoder.encode_into` straight into the writer's buffer** (`landing.py`): 0.1 µs
  a transaction (~0.06 ms a page), not worth the change.
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine(load_before: str) -> str:
    import psutil

    ram = psutil.virtual_memory().total / 2**30
    rows = [
        ("CPU", f"{_cpu_model()}, {psutil.cpu_count(logical=True)} logical cores"),
        ("RAM", f"{ram:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("Apache Airflow", _version("apache-airflow")),
        ("Task SDK", _version("apache-airflow-task-sdk")),
        ("apache-airflow-providers-http", _version("apache-airflow-providers-http")),
        (
            "requests / msgspec / uvicorn",
            f"{_version('requests')} / {_version('msgspec')} / {_version('uvicorn')}",
        ),
        ("load average (1, 5, 15 min) before / after", f"{load_before} / {_load()}"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def table(figures: list[Figure]) -> str:
    lines = ["| benchmark | figure | target | result | baseline (same run) |", "|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.name} | {f.value} | {f.target} | {f.verdict} | {f.baseline} |")
    return "\n".join(lines)


def why_not_met(figures: list[Figure]) -> list[str]:
    lines: list[str] = []
    for prefix, text in WHY_NOT_MET.items():
        if any(f.name.startswith(prefix) and f.met is False for f in figures):
            lines += [f"* {text}", ""]
    return ["Targets not met, and why:", "", *lines] if lines else []


def sizes_text(sizes: Sizes, quick: bool) -> str:
    memory = ", ".join(f"{n:,}" for n in sizes.memory_sizes)
    return "\n".join(
        [
            f"Sizes ({'--quick' if quick else 'default'}; chosen so that `make bench` takes a few minutes on 2 cores):",
            "",
            f"* throughput: 1 account, {sizes.throughput_transactions:,} transactions, pages of "
            f"{sizes.page_size}, {sizes.runs} runs of each loop;",
            f"* latency hiding: {sizes.latency_accounts} accounts x {sizes.latency_transactions:,} transactions "
            f"(pages of {sizes.page_size}), {sizes.latency_ms:.0f} ms added per request, {sizes.latency_runs} runs;",
            f"* memory: {memory} transactions in one account, one process per run, {sizes.memory_runs} runs;",
            f"* token economy: a DAG run of {2 + sizes.token_transaction_accounts} task processes, "
            f"{sizes.token_transactions:,} transactions per account in pages of {sizes.token_page_size} at "
            f"{sizes.token_latency_ms:.0f} ms a request, {sizes.token_runs} DAG runs per token lifetime;",
            f"* parse cost: {sizes.parse_runs} parses of each file;",
            f"* profile: {sizes.profile_transactions:,} transactions;",
            f"* landing formats: {', '.join(f'{n:,}' for n in sizes.formats_sizes)} transactions in one "
            f"account, each of jsonl, jsonl.gz and parquet, {sizes.formats_runs} processes each.",
        ]
    )


def merge(old: str, sections: list[Section], now: str, only: list[str], quick: bool) -> str:
    """``old`` results with the rows, "why not met" notes and ``## `` sections of ``sections`` put
    in (replaced or added); everything else is kept as it was last measured.

    A row belongs to a section by its name's first word (``moonshot:``, ``scale:``, ``1.``...)."""
    figures = [f for s in sections for f in s.figures]
    prefixes = {f.name.split()[0] for f in figures}
    titles = {f"## {s.title}" for s in sections}
    rows = table(figures).split("\n")[2:]
    # The notes of these figures: dropped from the old text, put back for those that miss now.
    notes = {f"* {text}" for key, text in WHY_NOT_MET.items() if any(f.name.startswith(key) for f in figures)}
    missed = [line for line in why_not_met(figures)[2:] if line]
    out: list[str] = []
    in_table = skipping = has_notes = table_done = dropped = False
    for line in old.rstrip("\n").split("\n"):
        if line.startswith("## "):
            skipping = line in titles
        if dropped and not line:  # the blank line after a dropped note
            dropped = False
            continue
        dropped = line in notes
        if skipping or dropped:
            continue
        if line.startswith("| benchmark | figure |") and not table_done:  # the results table
            in_table = table_done = True
        elif in_table and not line.startswith("|"):
            out += rows
            in_table = False
        if in_table and line.startswith("| ") and line[2:].split(" ", 1)[0] in prefixes:
            continue
        has_notes = has_notes or line.startswith("Targets not met, and why:")
        if line.startswith("How to run:") and missed:
            out += [] if has_notes else ["Targets not met, and why:", ""]
            out += [x for note in missed for x in (note, "")]
        out.append(line)
    note = (
        f"Written on {now} by `python -m benchmarks --only {','.join(only)}`{' --quick' if quick else ''}; "
        "the other sections are from the runs they name."
    )
    at = next((i for i, line in enumerate(out) if line.startswith("## Optimisations")), len(out))
    body: list[str] = []
    for s in sections:
        body += [f"## {s.title}", "", note, "", s.details.rstrip(), ""]
    return "\n".join(out[:at] + body + out[at:]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for debugging the harness")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(MODULES)}")
    parser.add_argument("--output", default=str(BENCH_DIR / "RESULTS.md"), help="where to write the results")
    args = parser.parse_args(argv)
    only = [m.strip() for m in args.only.split(",") if m.strip()] or list(MODULES)
    unknown = sorted(set(only) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(MODULES)}")
    sizes = Sizes.quick() if args.quick else Sizes()

    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(RUNS_DIR / "landing", ignore_errors=True)
    shutil.rmtree(RUNS_DIR / "logs", ignore_errors=True)
    load_before = _load()
    started = time.monotonic()
    say(f"load average {load_before}; running {', '.join(only)}{' (quick)' if args.quick else ''}")
    sections: list[Section] = []
    for name in MODULES:
        if name not in only:
            continue
        t0 = time.monotonic()
        module = importlib.import_module(f"benchmarks.{name}")
        section: Section = module.run(sizes)
        sections.append(section)
        for f in section.figures:
            say(f"{f.name}: {f.value} (target {f.target}: {f.verdict})")
        say(f"{name} took {time.monotonic() - t0:.0f} s")
    elapsed = time.monotonic() - started
    figures = [f for s in sections for f in s.figures]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`python -m benchmarks{' --quick' if args.quick else ''}`) on {now}, "
        f"in {elapsed / 60:.1f} min. Benchmarks print figures and assert nothing; each figure is a ratio "
        "to a baseline measured in the same run (medians of several runs), against the local sandbox "
        "on 127.0.0.1. See `benchmarks/__init__.py` and each module's docstring for the method.",
        "",
        table(figures),
        "",
        *why_not_met(figures),
        "How to run: `make bench` (= `python -m benchmarks`), or `python -m benchmarks --quick` (small "
        "sizes, to check the harness) / `--only throughput,latency,memory,tokens,parse,hotpath,consents,scale,formats,moonshot` "
        "(`make bench-moonshot` = `--only moonshot`: Airflow's real services, about 20 minutes). Task "
        "logs of every child process are in `benchmarks/.runs/logs/`.",
        "",
        "## Machine",
        "",
        machine(load_before),
        "",
        sizes_text(sizes, args.quick),
    ]
    for s in sections:
        parts += ["", f"## {s.title}", "", s.details.rstrip()]
    parts += ["", "## Optimisations", "", OPTIMISATIONS.rstrip()]
    text = "\n".join(parts) + "\n"
    out = Path(args.output)
    if set(only) != set(MODULES) and out.exists():
        # A subset (`--only`): its rows and sections replace theirs in the existing results; the
        # other benchmarks' figures stay as they were last measured.
        text = merge(out.read_text(), sections, now, only, args.quick)
    out.write_text(text)
    print()
    print(table(figures))
    print()
    say(f"wrote {out} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
