"""``make demo``: run the example DAGs for real against the local Flinks/FDX sandbox.

1. starts the sandbox on a free loopback port (3 customers, 6 accounts each of several types,
   thousands of transactions, pending ones included);
2. makes a throw-away ``AIRFLOW_HOME`` in ``airflow-home/`` (git-ignored), ``airflow db migrate``;
3. creates two ``openbanking`` connections (two customer consents), the SQLite warehouse
   connection ``openbanking_warehouse``, the pool ``openbanking_api`` and the Variable
   ``openbanking_conn_ids``, with the Airflow CLI;
4. runs ``airflow dags test openbanking_accounts_transactions`` for two consecutive days, moving the
   bank's clock to just after each interval's end (so transactions pending in the first run post
   before the second), then the downstream ``openbanking_daily_summary``;
5. prints what happened and how to open the same DAGs in the Airflow UI.

The sandbox is stopped at the end, also on failure; any failure exits non-zero.
``--ui`` keeps the sandbox up afterwards and starts ``airflow standalone`` on the same home
(Ctrl-C stops both).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / "airflow-home"
BIN = Path(sys.executable).parent
MAIN_DAG = "openbanking_accounts_transactions"
SUMMARY_DAG = "openbanking_daily_summary"
POOL = "openbanking_api"
POOL_SLOTS = 4
UTC = dt.timezone.utc

sys.path.insert(0, str(REPO))


class DemoError(RuntimeError):
    pass


def say(message: str = "") -> None:
    print(message, flush=True)


def airflow_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    # Settings of the caller's own Airflow must not leak into the demo.
    for key in [k for k in env if k.startswith("AIRFLOW_CONN_") or k.startswith("AIRFLOW_VAR_")]:
        del env[key]
    env.pop("AIRFLOW__OPENBANKING__LANDING_DESTINATION", None)
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    return env


def airflow(*args: str, log: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run one ``airflow`` CLI command; its output goes to ``log`` (or is shown on failure)."""
    cmd = [str(BIN / "airflow"), *args]
    started = time.monotonic()
    with open(log or os.devnull, "w") as sink:
        proc = subprocess.run(
            cmd,
            env=env or airflow_env(),
            stdout=sink if log else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    if proc.returncode != 0:
        output = log.read_text() if log else (proc.stdout or "")
        tail = "\n".join(output.splitlines()[-40:])
        raise DemoError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    say(
        f"    airflow {' '.join(a if len(a) < 60 else a[:57] + '...' for a in args)}  ({time.monotonic() - started:.1f} s)"
    )


def write_config(file_format: str | None = None) -> None:
    """A minimal airflow.cfg, so that `airflow standalone` on this home later sees the same setup."""
    import secrets

    from cryptography.fernet import Fernet

    HOME.mkdir(parents=True)
    # Secrets Airflow would generate into a full airflow.cfg: without a shared jwt_secret, each
    # `airflow standalone` component makes its own and task workers are refused ("Invalid auth
    # token"); without a fernet_key, connection passwords are stored in clear.
    (HOME / "airflow.cfg").write_text(
        "[core]\n"
        f"dags_folder = {REPO / 'dags'}\n"
        "load_examples = False\n"
        "executor = LocalExecutor\n"
        f"fernet_key = {Fernet.generate_key().decode()}\n"
        "\n[api]\n"
        f"secret_key = {secrets.token_urlsafe(24)}\n"
        "\n[api_auth]\n"
        f"jwt_secret = {secrets.token_urlsafe(24)}\n"
        "\n[logging]\n"
        "logging_level = INFO\n" + (f"\n[openbanking]\nfile_format = {file_format}\n" if file_format else "")
    )


def table_counts(db: Path) -> dict[str, Any]:
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        out: dict[str, Any] = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        if "openbanking_transactions" in tables:
            out["_details"] = conn.execute(
                "SELECT COUNT(DISTINCT conn_id), COUNT(DISTINCT account_id), "
                "SUM(CASE WHEN status = 'PENDING' THEN 1 ELSE 0 END), COUNT(DISTINCT account_category), "
                "MIN(window_date), MAX(window_date) FROM openbanking_transactions"
            ).fetchone()
            out["_pending_ids"] = {
                r[0]
                for r in conn.execute(
                    "SELECT transaction_id FROM openbanking_transactions WHERE status = 'PENDING'"
                )
            }
    return out


def posted_twins(db: Path, pending_ids: set[str]) -> int:
    """How many of ``pending_ids`` (pending in the previous run) have posted since under a new id.

    Raises if a pending row is still in the table next to its posted twin (a duplicate).
    """
    if not pending_ids:
        return 0
    with sqlite3.connect(db) as conn:
        twins = {
            row[0]
            for row in conn.execute(
                "SELECT reference_transaction_id FROM openbanking_transactions "
                "WHERE status = 'POSTED' AND reference_transaction_id IS NOT NULL"
            )
        }
        still_pending = {
            row[0]
            for row in conn.execute(
                "SELECT transaction_id FROM openbanking_transactions WHERE status = 'PENDING'"
            )
        }
    duplicates = twins & still_pending
    if duplicates:
        raise DemoError(f"pending transactions kept next to their posted twins: {sorted(duplicates)[:5]}")
    return len(pending_ids & twins)


def landed_transactions(root: Path) -> tuple[int, int]:
    """Records and bytes of the landed transactions files, read through the provider's one reader
    (any format: plain, gzip or Parquet)."""
    from airflow_provider_openbanking.landing import file_format_of, iter_records

    records = size = 0
    for path in (root / "transactions").rglob("*") if (root / "transactions").exists() else ():
        if path.is_file() and file_format_of(path.name) and not path.name.startswith("."):
            records += sum(1 for _ in iter_records(str(path)))
            size += path.stat().st_size
    return records, size


def landed_files(root: Path) -> tuple[Counter[str], int]:
    by_dataset: Counter[str] = Counter()
    size = 0
    if root.exists():
        for path in root.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                by_dataset[path.relative_to(root).parts[0]] += 1
                size += path.stat().st_size
    return by_dataset, size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--first",
        type=dt.date.fromisoformat,
        default=dt.date(2026, 11, 19),
        help="logical date of the first run: it covers the day before (default 2026-11-19)",
    )
    p.add_argument("--transactions-per-account", type=int, default=2000)
    p.add_argument("--customers", type=int, default=3)
    p.add_argument(
        "--file-format",
        choices=("jsonl.gz", "jsonl", "parquet"),
        default=None,
        help="[openbanking] file_format of the landed files (default: the provider's, jsonl.gz)",
    )
    p.add_argument(
        "--ui", action="store_true", help="afterwards keep the sandbox up and run `airflow standalone`"
    )
    p.add_argument("--ui-port", type=int, default=0, help="API server port for --ui (default: a free one)")
    args = p.parse_args(argv)
    if args.customers < 2:
        p.error("--customers must be at least 2 (the demo uses two consents)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    from airflow_provider_openbanking.sandbox.testing import SandboxServer

    say("Open Banking provider demo")
    say(f"  AIRFLOW_HOME = {HOME} (throw-away: recreated on every run)")
    if HOME.exists():
        shutil.rmtree(HOME)
    write_config(args.file_format)
    logs = HOME / "demo-logs"
    logs.mkdir()
    warehouse_db = HOME / "warehouse.db"
    sandbox = SandboxServer(
        customers=args.customers,
        accounts_per_customer=6,
        transactions_per_account=args.transactions_per_account,
        seed=42,
    )
    try:
        say("\n[1/5] Starting the Flinks/FDX sandbox")
        sandbox.start()
        customers = sandbox.customers()
        n_accounts = sum(len(c.get("accounts", [])) for c in customers)
        kinds = Counter(a.get("accountType") for c in customers for a in c.get("accounts", []))
        say(
            f"    {sandbox.url}: {len(customers)} customers, {n_accounts} accounts "
            f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
            f"{n_accounts * args.transactions_per_account:,} transactions over 90 days"
        )

        say("\n[2/5] Airflow metadata database")
        airflow("db", "migrate", log=logs / "db-migrate.log")

        say("\n[3/5] Connections (one per customer consent), warehouse, pool, Variable")
        consents = {
            "openbanking_default": customers[0]["customerId"],
            "openbanking_customer_2": customers[1]["customerId"],
        }
        connections: dict[str, Any] = {}
        for conn_id, customer_id in consents.items():
            refresh_token = sandbox.grant_consent(customer_id)  # what `airflow-openbanking authorize` does
            connections[conn_id] = {
                "conn_type": "openbanking",
                "description": f"Sandbox consent of {customer_id}",
                "host": sandbox.url,
                "login": "demo-client",
                "password": "demo-secret",
                "extra": json.dumps({"refresh_token": refresh_token, "provider_id": "1000"}),
            }
        connections["openbanking_warehouse"] = {
            "conn_type": "sqlite",
            "description": "Demo warehouse (SQLite)",
            "host": str(warehouse_db),
        }
        conn_file = HOME / "demo-connections.json"
        conn_file.write_text(json.dumps(connections))
        try:
            airflow("connections", "import", str(conn_file))
        finally:
            conn_file.unlink()  # it holds refresh tokens
        airflow("pools", "set", POOL, str(POOL_SLOTS), "Open Banking API calls (size it to the rate limit)")
        airflow("variables", "set", "openbanking_conn_ids", json.dumps(list(consents)))

        say(f"\n[4/5] Running {MAIN_DAG} for two consecutive days")
        runs = []
        previous_pending: set[str] = set()
        for i in range(2):
            logical = dt.datetime.combine(args.first + dt.timedelta(days=i), dt.time(), UTC)
            interval = (logical - dt.timedelta(days=1), logical)
            now = logical + dt.timedelta(minutes=5)
            sandbox.configure(now=now.isoformat())
            before = sandbox.counters()
            t = time.monotonic()
            airflow(
                "dags",
                "test",
                MAIN_DAG,
                logical.date().isoformat(),
                log=logs / f"{MAIN_DAG}-{logical.date()}.log",
            )
            counters = sandbox.counters()
            counts = table_counts(warehouse_db)
            posted_since = posted_twins(warehouse_db, previous_pending)
            len_previous = len(previous_pending)
            previous_pending = counts.get("_pending_ids", set())
            runs.append((interval, time.monotonic() - t, counts, counters, before, posted_since))
            details = counts.get("_details") or (0, 0, 0, 0, None, None)
            say(
                f"    [{interval[0]:%Y-%m-%d %H:%M}, {interval[1]:%Y-%m-%d %H:%M}) bank clock {now:%Y-%m-%d %H:%M}Z: "
                f"success; table {counts.get('openbanking_transactions', 0):,} rows, {details[2]} pending"
                + (
                    f", {posted_since} of the {len_previous} pending before posted since (new id, pending row gone)"
                    if i
                    else ""
                )
            )

        say(f"\n[5/5] Downstream {SUMMARY_DAG} (scheduled on the transactions table Asset)")
        airflow(
            "dags",
            "test",
            SUMMARY_DAG,
            (args.first + dt.timedelta(days=1)).isoformat(),
            log=logs / f"{SUMMARY_DAG}.log",
        )

        counts = table_counts(warehouse_db)
        files, size = landed_files(HOME / "openbanking")
        landed_tx, landed_tx_bytes = landed_transactions(HOME / "openbanking")
        counters = sandbox.counters()
        grants = counters.get("token_grants", {})
        requests_by_endpoint = counters.get("requests", {})
        total_requests = sum(requests_by_endpoint.values())
        details = counts.get("_details") or (0, 0, 0, 0, None, None)
        elapsed = time.monotonic() - started

        say("\n" + "=" * 78)
        say(f"Demo finished in {elapsed:.0f} s")
        say(f"Warehouse {warehouse_db.relative_to(REPO)} (connection openbanking_warehouse):")
        for name, n in counts.items():
            if not name.startswith("_"):
                say(f"    {name:<28} {n:>8,} rows")
        say(
            f"    transactions: {details[0]} consents, {details[1]} accounts, {details[3]} account categories, "
            f"{details[2]} pending, dates {details[4]} .. {details[5]}"
        )
        say(
            f"Files landed under {(HOME / 'openbanking').relative_to(REPO)}/: {sum(files.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(files.items()))}), {size / 1e6:.1f} MB; "
            f"{landed_tx:,} transactions in {args.file_format or 'jsonl.gz'} files, "
            f"{landed_tx_bytes / max(landed_tx, 1):.0f} bytes each"
        )
        say(
            f"Token requests to the sandbox: {sum(grants.values())} "
            f"({', '.join(f'{k} {v}' for k, v in grants.items() if v)}); "
            f"API requests in all: {total_requests}"
        )
        for interval, seconds, _c, after, before, _p in runs:
            say(
                f"    run [{interval[0]:%m-%d}, {interval[1]:%m-%d}): {seconds:.1f} s, "
                f"{sum(after['token_grants'].values()) - sum(before['token_grants'].values())} token request(s), "
                f"{sum(after['requests'].values()) - sum(before['requests'].values())} API request(s)"
            )
        say(f"Logs of each `airflow dags test`: {logs.relative_to(REPO)}/")
        say("")
        say("Open the same DAGs and these runs in the Airflow UI:")
        say(f"    AIRFLOW_HOME={HOME} PATH={BIN}:$PATH airflow standalone")
        say(
            "    then http://localhost:8080 (user admin; password in "
            f"{(HOME / 'simple_auth_manager_passwords.json.generated').relative_to(REPO)})"
        )
        say("  The sandbox stops with this script, so new runs there would fail to connect; to trigger")
        say(f"  runs from the UI against a live sandbox: {BIN / 'python'} scripts/demo.py --ui")
        say("=" * 78)

        if args.ui:
            run_ui(args.ui_port or free_port())
        return 0
    except DemoError as exc:
        say(f"\nDEMO FAILED: {exc}")
        if sandbox.process is not None:
            say(f"(sandbox output)\n{sandbox.output[-2000:]}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        sandbox.stop()


def run_ui(port: int) -> None:
    """`airflow standalone` on this home until Ctrl-C (or SIGTERM); then stop all its processes."""
    env = airflow_env()
    env["AIRFLOW__API__PORT"] = str(port)
    env["AIRFLOW__API__BASE_URL"] = f"http://localhost:{port}"
    env["AIRFLOW__WORKERS__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
    say(f"\nStarting `airflow standalone` on http://localhost:{port} (Ctrl-C stops it and the sandbox)")
    say("  A backfill runs once the DAG is unpaused, e.g.:")
    say(f"    AIRFLOW_HOME={HOME} {BIN / 'airflow'} dags unpause {MAIN_DAG}")
    say(f"    AIRFLOW_HOME={HOME} {BIN / 'airflow'} backfill create --dag-id {MAIN_DAG} \\")
    say("        --from-date 2026-10-20 --to-date 2026-11-18 --max-active-runs 3")
    # Its own process group: standalone does not always stop its children on SIGTERM.
    proc = subprocess.Popen([str(BIN / "airflow"), "standalone"], env=env, start_new_session=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)  # `kill` stops the sandbox (and the UI) too
    sys.exit(main())
