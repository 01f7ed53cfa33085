"""Shared helpers: sizes, child processes, sandbox connections, medians and figures."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
RUNS_DIR = BENCH_DIR / ".runs"  # git-ignored scratch space: AIRFLOW_HOME, landed files, logs
LOG_DIR = RUNS_DIR / "logs"
AIRFLOW_HOME = RUNS_DIR / "airflow-home"
CONN_ID = "openbanking_bench"
HTTP_CONN_ID = "http_bench"
FDX = "/api/fdx/5"
#: The sandbox's span (``--days 90 --end-date 2026-11-20``): querying it whole returns every
#: transaction of an account. End dates are inclusive for the API, exclusive for the operator.
SPAN_START = "2026-08-23"
SPAN_LAST_DAY = "2026-11-20"
SPAN_END_EXCLUSIVE = "2026-11-21"


@dataclass
class Sizes:
    """What every benchmark runs; ``--quick`` shrinks it for debugging the harness."""

    runs: int = 5  # repetitions of each timed measurement (median taken)
    page_size: int = 500
    throughput_transactions: int = 100_000
    throughput_latency_ms: float = 20  # the with-latency context figure
    throughput_latency_runs: int = 3
    latency_accounts: int = 16
    latency_ms: float = 100
    latency_transactions: int = 2_000  # per account: 5 pages of 500
    latency_runs: int = 3
    memory_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    memory_runs: int = 3
    token_transaction_accounts: int = 3
    token_latency_ms: float = 50
    token_page_size: int = 100
    token_transactions: int = 24_000  # per account: 241 pages of 100 at 50 ms: ~12.5 s, 2.5 lifetimes of 5 s
    token_runs: int = 3
    parse_runs: int = 7
    profile_transactions: int = 50_000
    formats_sizes: tuple[int, ...] = (100_000, 1_000_000)
    formats_runs: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            runs=3,
            throughput_transactions=20_000,
            latency_accounts=8,
            latency_transactions=1_000,
            latency_runs=3,
            memory_sizes=(1_000, 10_000, 50_000),
            memory_runs=3,
            token_transaction_accounts=2,
            token_transactions=6_000,
            token_runs=3,
            parse_runs=3,
            profile_transactions=10_000,
            formats_sizes=(10_000, 50_000),
            formats_runs=2,
        )


@dataclass
class Figure:
    """One line of the results table."""

    name: str
    value: str
    target: str
    met: bool | None
    baseline: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else ("met" if self.met else "**not met**")


@dataclass
class Section:
    """What one benchmark module reports: figures for the table and Markdown for the details."""

    title: str
    figures: list[Figure]
    details: str


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def spread(values: Iterable[float]) -> str:
    """``min-max`` of a series, for the details tables."""
    vals = list(values)
    return f"{min(vals):.3g}-{max(vals):.3g}"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child process: a throw-away AIRFLOW_HOME, no example DAGs."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(AIRFLOW_HOME),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(AIRFLOW_HOME / "dags"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("AIRFLOW__OPENBANKING__LANDING_DESTINATION", None)
    if extra:
        env.update(extra)
    return env


def run_child(target: str, params: dict[str, Any], *, log_name: str, timeout: float = 600) -> Any:
    """Run ``benchmarks.worker <target>`` with ``params``; return what it wrote as its result.

    The child's stdout and stderr (task logs) go to ``.runs/logs/<log_name>.log``.
    """
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    result_path = RUNS_DIR / f"result-{uuid.uuid4().hex[:8]}.json"
    params = {**params, "result_path": str(result_path)}
    env = child_env(params.pop("env", None))
    log_path = LOG_DIR / f"{log_name}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%H:%M:%S')} {target} =====\n".encode())
        log.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", target],
            input=json.dumps(params).encode(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"benchmark child {target} failed (exit {proc.returncode}); log {log_path}:\n{tail}"
        )
    try:
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


def openbanking_conn(url: str, refresh_token: str, **extra: Any) -> str:
    """An ``AIRFLOW_CONN_<ID>`` value as a user would write it (token store in memory: no DB)."""
    extras = {"refresh_token": refresh_token, "token_store": "memory", **extra}
    return json.dumps(
        {
            "conn_type": "openbanking",
            "host": url,
            "login": "demo-client",
            "password": "demo-secret",
            "extra": extras,
        }
    )


def conn_env(conn_id: str, value: str) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": value}


@contextmanager
def sandbox(**options: Any) -> Iterator[Any]:
    """A sandbox process on a free loopback port (see ``docs/sandbox.md``)."""
    from airflow_provider_openbanking.sandbox.testing import SandboxServer

    server = SandboxServer(host="127.0.0.1", port=0, **options)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


def consent_env(server: Any, page_size: int, refresh_token: str | None = None) -> dict[str, str]:
    """The bench connection to ``server`` as a child's environment: a new consent, or the one of
    ``refresh_token``."""
    refresh = refresh_token or server.grant_consent()
    return conn_env(CONN_ID, openbanking_conn(server.url, refresh, page_size=page_size))


@contextmanager
def one_account_sandbox(transactions: int, page_size: int) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A sandbox of one account of ``transactions`` transactions, and what a child that pages it
    needs: ``env`` (the bench connection, a new consent), ``url``, ``account``, ``token`` (an access
    token for the baselines that bypass the hook) and ``page_size``."""
    with sandbox(
        customers=1, accounts_per_customer=1, transactions_per_account=transactions, page_size=page_size
    ) as server:
        account = server.truth_accounts()[0]["accountId"]
        refresh = server.grant_consent()
        yield (
            server,
            {
                "env": consent_env(server, page_size, refresh),
                "url": server.url,
                "account": account,
                "token": access_token(server.url, refresh),
                "page_size": page_size,
            },
        )


@contextmanager
def sized_sandbox(counts: Sequence[int], page_size: int) -> Iterator[tuple[Any, dict[str, int]]]:
    """A sandbox of one account per size in ``counts``, each holding that many transactions:
    ``(server, {account_id: transactions})``, in the order of ``counts``."""
    with sandbox(
        customers=1, accounts_per_customer=len(counts), transactions_per_account=10, page_size=page_size
    ) as server:
        accounts = [a["accountId"] for a in server.truth_accounts()]
        per_account = dict(zip(accounts, counts, strict=False))
        server.configure(account_transactions=per_account)
        yield server, per_account


def transactions_operator(landing: str, **overrides: Any) -> Any:
    """The ``OpenBankingTransactionsOperator`` the benchmarks time: the bench connection, the
    sandbox's whole span, no lookback, one worker, files under ``.runs/landing/<landing>``;
    ``overrides`` change any argument (``account_ids``, ``file_format``, ``max_workers`` …)."""
    from airflow_provider_openbanking.operators.openbanking import OpenBankingTransactionsOperator

    arguments: dict[str, Any] = {
        "task_id": "land_transactions",
        "openbanking_conn_id": CONN_ID,
        "destination": str(RUNS_DIR / "landing" / landing),
        "start_time": SPAN_START,
        "end_time": SPAN_END_EXCLUSIVE,
        "lookback": 0,
        "max_workers": 1,
        **overrides,
    }
    return OpenBankingTransactionsOperator(**arguments)


def access_token(url: str, refresh_token: str) -> str:
    """A customer access token for the baselines that do not use the hook (bare loop, HttpOperator)."""
    import requests

    with requests.Session() as http:
        http.trust_env = False
        resp = http.post(
            f"{url}/api/v1/token",
            json={
                "client_id": "demo-client",
                "client_secret": "demo-secret",
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            },
            timeout=30,
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])


def account_ids(server: Any) -> list[str]:
    return [str(a["accountId"]) for a in server.truth_accounts()]


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"
