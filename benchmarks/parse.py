"""5. Parse cost: time to parse each example DAG file vs an empty DAG file.

Measured the way Airflow 3's DAG processor parses a file: a long-lived parent process with
Airflow loaded pre-imports the ``airflow.*`` modules the file names (``parsing_pre_import_modules``,
on by default), then forks a child that builds a ``BundleDagBag`` of that one file and serialises
its DAGs (``DagSerialization.to_dict``). The child's time for that is the parse cost; modules that
are not ``airflow.*`` (this provider, requests, ...) are imported afresh in every child, as in
production. Each file is parsed ``Sizes.parse_runs`` times, files interleaved; the baseline is a
file holding a DAG with no task (``from airflow.sdk import DAG``). Every ``*.py`` file of ``dags/``
present at run time is measured; the figure is the slowest file's ratio.

For the slowest file, a ``python -X importtime``-style breakdown (``sys.modules`` before and after,
the self time of each module first imported during the parse) says which imports the time goes to.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    RUNS_DIR,
    Figure,
    Section,
    Sizes,
    fmt_ratio,
    median,
    run_child,
    say,
    spread,
)

TARGET = 1.2
DAGS_DIR = ROOT / "dags"
EMPTY_DAG = '''"""An empty DAG: the baseline of the parse-cost benchmark."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

with DAG(dag_id="bench_empty", schedule=None, start_date=dt.datetime(2026, 1, 1)):
    pass
'''


#: A reference, not the baseline: one TaskFlow task and nothing from this provider. Its parse
#: pays what Airflow itself loads lazily for any DAG with a task (``airflow.sdk``'s decorators;
#: the standard provider's operators, imported by the serialiser's dependency detection).
TASKFLOW_DAG = '''"""A DAG with one @task and nothing else: a reference for the parse-cost benchmark."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task


@dag(dag_id="bench_one_task", schedule=None, start_date=dt.datetime(2026, 1, 1))
def bench_one_task():
    @task
    def hello() -> str:
        return "hello"

    hello()


bench_one_task()
'''


def _parse_once(path: str, bundle: str, out: Path, trace_imports: bool) -> None:
    """In a forked child: parse ``path`` like the DAG processor's child does; write the result."""
    import sys

    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization

    before = set(sys.modules)
    t0 = time.perf_counter()
    bag = BundleDagBag(dag_folder=path, bundle_path=Path(bundle), bundle_name="bench", load_op_links=False)
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    seconds = time.perf_counter() - t0
    new = sorted(set(sys.modules) - before)
    out.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "dags": len(bag.dags),
                "tasks": sum(len(d.tasks) for d in bag.dags.values()),
                "errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()},
                "new_modules": len(new),
                "new_top": sorted({m.split(".")[0] for m in new}) if trace_imports else [],
            }
        )
    )


def child(p: dict[str, Any]) -> dict[str, Any]:
    import gc

    import airflow.dag_processing.manager  # noqa: F401  (what the DAG processor has loaded)
    import structlog
    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: F401
    from airflow.dag_processing.processor import _pre_import_airflow_modules
    from airflow.serialization.serialized_objects import DagSerialization  # noqa: F401

    log = structlog.get_logger("bench")
    gc.freeze()  # as the DAG processor's manager does before its parsing loop (no copy-on-write, no
    # collection of the inherited heap in every child)
    scratch = RUNS_DIR / "parse"
    files: list[str] = p["files"]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {"processor": {}, "warm": {}}

    def rounds(mode: str) -> None:
        for rep in range(p["runs"] + 1):  # round 0 is a warm-up, not counted
            for i, path in enumerate(files if rep % 2 == 0 else files[::-1]):
                _pre_import_airflow_modules(path, log)  # in the parent, as the DAG processor does
                out = scratch / f"parse-{i}.json"
                out.unlink(missing_ok=True)
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        _parse_once(path, str(Path(path).parent), out, trace_imports=rep == 0)
                        code = 0
                    finally:
                        os._exit(code)
                os.waitpid(pid, 0)
                result = json.loads(out.read_text())
                if result["errors"]:
                    raise RuntimeError(f"{path} does not parse: {result['errors']}")
                if rep > 0:
                    results[mode].setdefault(path, []).append(result)

    rounds("processor")
    # Then the same once every file has been parsed in the parent itself, so that everything any
    # of them imports (lazily loaded Airflow modules included) is already loaded: what is left is
    # the cost of the DAG definitions and their serialisation.
    for path in files:
        _parse_once(path, str(Path(path).parent), scratch / "parse-prepare.json", trace_imports=False)
    rounds("warm")
    return results


def import_profile(path: str) -> list[tuple[str, float]]:
    """Self time (ms) of the modules first imported while parsing ``path`` after Airflow's own."""
    import subprocess
    import sys

    code = (
        "import airflow.sdk, airflow.sdk.bases.operator, airflow.dag_processing.dagbag, runpy, sys\n"
        "runpy.run_path(sys.argv[1])\n"
    )
    from benchmarks.common import child_env

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, path],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
        check=False,
    )
    lines = proc.stderr.splitlines()
    # Everything imported before runpy ran belongs to the warm parent: keep only what follows it.
    start = max((i for i, line in enumerate(lines) if line.rstrip().endswith("| runpy")), default=-1) + 1
    rows: list[tuple[str, float]] = []
    for line in lines[start:]:
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            self_us = float(parts[0].split(":")[1])
        except ValueError:
            continue
        rows.append((parts[2].strip(), self_us / 1000))
    return rows


def group_imports(rows: list[tuple[str, float]]) -> list[tuple[str, float, int]]:
    groups: dict[str, tuple[float, int]] = {}
    for name, ms in rows:
        top = name.split(".")[0]
        total, count = groups.get(top, (0.0, 0))
        groups[top] = (total + ms, count + 1)
    return sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda x: -x[1])


def run(sizes: Sizes) -> Section:
    scratch = RUNS_DIR / "parse"
    scratch.mkdir(parents=True, exist_ok=True)
    baseline_dir = scratch / "dags"
    baseline_dir.mkdir(exist_ok=True)
    empty = baseline_dir / "bench_empty_dag.py"
    empty.write_text(EMPTY_DAG)
    reference = baseline_dir / "bench_one_task_dag.py"
    reference.write_text(TASKFLOW_DAG)
    dag_files = sorted(str(f) for f in DAGS_DIR.glob("*.py") if not f.name.startswith("_"))
    say(f"parse cost: {len(dag_files)} example DAG file(s) vs an empty DAG, {sizes.parse_runs} parses each")
    if not dag_files:
        figure = Figure(
            "5. Parse cost: example DAG / empty DAG", "no DAG file in dags/", f"≤ {TARGET}x", None
        )
        return Section(
            "5. Parse cost", [figure], "`dags/` holds no DAG file at run time: nothing to measure."
        )
    files = [str(empty), str(reference), *dag_files]
    res = run_child("benchmarks.parse:child", {"files": files, "runs": sizes.parse_runs}, log_name="parse")
    parsed, warm = res["processor"], res["warm"]
    base = median(r["seconds"] for r in parsed[str(empty)])
    warm_base = median(r["seconds"] for r in warm[str(empty)])
    lines = [
        f"Median of {sizes.parse_runs} forked parses per file (after one warm-up round), the baseline "
        f"being an empty DAG ({base * 1000:.1f} ms). *Imports warm*: the same after every file has been "
        "parsed once in the parent, so that every module any parse needs is already loaded -- the cost "
        "of the DAG definitions and their serialisation alone, i.e. what a parse would cost if nothing "
        "had to be imported.",
        "",
        "| DAG file | DAGs / tasks | median parse | runs (ms) | vs empty DAG | modules imported by the parse "
        "| imports warm | vs empty DAG (warm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst_name, worst = "", 0.0
    for path in files:
        rows = parsed[path]
        med = median(r["seconds"] for r in rows)
        warm_med = median(r["seconds"] for r in warm[path])
        ratio = med / base
        name = Path(path).name + {str(empty): " (baseline)", str(reference): " (reference)"}.get(path, "")
        lines.append(
            f"| `{name}` | {rows[0]['dags']} / {rows[0]['tasks']} | {med * 1000:.1f} ms "
            f"| {spread(r['seconds'] * 1000 for r in rows)} | {fmt_ratio(ratio)} | {rows[0]['new_modules']} "
            f"| {warm_med * 1000:.1f} ms | {fmt_ratio(warm_med / warm_base)} |"
        )
        if path in dag_files and ratio > worst:
            worst_name, worst = Path(path).name, ratio
    say(f"parse cost: worst {worst_name} at {fmt_ratio(worst)} the empty DAG")
    slowest = next(p for p in dag_files if Path(p).name == worst_name)
    groups = group_imports(import_profile(slowest))
    total_ms = sum(g[1] for g in groups)
    lines += [
        "",
        f"Where the parse time of `{worst_name}` goes: self time of the modules its parse imports "
        f"beyond what the DAG processor has already loaded (`python -X importtime`, one cold run, "
        f"{total_ms:.0f} ms in all), by top-level package:",
        "",
        "| package | modules | self time |",
        "|---|---|---|",
        *(f"| `{name}` | {count} | {ms:.1f} ms |" for name, ms, count in groups[:12]),
    ]
    figure = Figure(
        name="5. Parse cost: slowest example DAG file / empty DAG file",
        value=f"{fmt_ratio(worst)} (`{worst_name}`; {len(dag_files)} file(s))",
        target=f"≤ {TARGET}x",
        met=worst <= TARGET,
        baseline="empty DAG file, same parser",
    )
    return Section("5. Parse cost", [figure], "\n".join(lines))
