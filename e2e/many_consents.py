"""The sharded many-consent run (issue 14) on the production-shape deployment of ``e2e/run.py``.

One Data Recipient client (connection ``openbanking_many``) holds ``N`` customer consents in the
SQL consent store on the same PostgreSQL server (database ``consents``, extra
``consent_store_conn_id``; tokens Fernet-encrypted with ``[core] fernet_key``), onboarded the way
an admin does it: ``airflow connections add`` for the client and the store, then
``airflow-openbanking consents import --conn-id openbanking_many FILE`` with the bank's consents
(the sandbox issues them all in one call). The main DAG then runs once over that connection, in
shards (``consents_per_shard`` = N / SHARDS), on both Celery workers.

Checks:

- the run and every task instance succeeded, with a task count that does not grow with N;
- the warehouse holds exactly the bank's transactions of every consent (key with ``consent_id``);
- 0 ``invalid_grant`` and at most one refresh grant per consent (every consent landed data, so at
  least one each: the sum bounds each of them);
- each consent's stored refresh token is the rotated one (not the imported one, and one the bank
  issued), checked through the provider's consent store API by fingerprint, never printed; the
  table holds no token in plain text;
- both workers ran shard tasks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import BIN, Api, Checks, E2EError, Processes, run_clis, run_windows, say, sql_rows

MAIN_DAG = "openbanking_accounts_transactions"
MANY_CONN = "openbanking_many"
STORE_CONN = "openbanking_consent_store"
SHARDS = 4
ACCOUNTS_PER_CUSTOMER = 2
TRANSACTIONS_PER_ACCOUNT = 60
#: Long enough for every task of a shard to use the access token of the consent's one refresh.
ACCESS_TOKEN_TTL = 900


def fingerprint(token: str | None) -> str | None:
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


#: Run with the scheduler host's environment: reads the consent store through the provider's API
#: (an Airflow host's CLI path: connections from the metadata DB) and prints fingerprints only.
STORE_PROBE = """
import hashlib, json, sys
from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
hook = OpenBankingHook(sys.argv[1])
store = hook.consent_store
ids = hook.consent_ids()
records = store.load_many(sys.argv[1], ids)
fp = lambda t: hashlib.sha256(t.encode()).hexdigest()[:16] if t else None
print(json.dumps({
    "store": store.describe(sys.argv[1]),
    "kind": getattr(store, "kind", type(store).__name__),
    "encrypted": bool(store.encrypted),
    "ids": ids,
    "records": {cid: {"refresh": fp(r.refresh_token), "state": str(r.state),
                      "last_refresh_at": r.last_refresh_at, "last_success_at": r.last_success_at}
                for cid, r in records.items() if r is not None},
}))
"""


def run_many_consents(
    n: int,
    dep: Any,
    api: Api,
    procs: Processes,
    checks: Checks,
    logs: Path,
    last_date: dt.datetime,
    bank_options: dict[str, Any],
    runs_timeout: float = 900,
) -> dict[str, Any]:
    from airflow_provider_openbanking.sandbox.testing import SandboxServer

    logical = last_date + dt.timedelta(days=1)  # a date of its own: one run per logical date
    options = {
        **bank_options,
        "accounts_per_customer": ACCOUNTS_PER_CUSTOMER,
        "transactions_per_account": TRANSACTIONS_PER_ACCOUNT,
        "access_token_ttl": ACCESS_TOKEN_TTL,
        "now": (logical + dt.timedelta(minutes=5)).isoformat(),
    }
    bank = SandboxServer(customers=n, **options)
    summary: dict[str, Any] = {"consents": n, "shards": SHARDS}
    env = dep.env()
    bank.start()
    try:
        consents = bank.grant_consents(n)
        imported = {c["consent_id"]: fingerprint(c["refresh_token"]) for c in consents}
        store_url = dep.pg.create_database("consents")
        # The import file holds refresh tokens: owner-only, outside any Airflow home, deleted after.
        path = dep.root / "consents-import.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            for c in consents:
                out.write(
                    json.dumps({"consent_id": c["consent_id"], "refresh_token": c["refresh_token"]}) + "\n"
                )
        extra = {
            "provider_id": "1000",
            "scopes": "ACCOUNT_BASIC ACCOUNT_DETAILED TRANSACTIONS",
            "redirect_uri": "http://127.0.0.1:8976/callback",
            "consent_store_conn_id": STORE_CONN,
        }
        run_clis(
            env,
            dep.root,
            {
                f"connections-add-{MANY_CONN}": [
                    "connections",
                    "add",
                    MANY_CONN,
                    "--conn-type",
                    "openbanking",
                    "--conn-description",
                    f"Sandbox client with {n} customer consents (SQL consent store)",
                    "--conn-host",
                    bank.url,
                    "--conn-login",
                    "demo-client",
                    "--conn-password",
                    "demo-secret",
                    "--conn-extra",
                    json.dumps(extra),
                ],
                f"connections-add-{STORE_CONN}": [
                    "connections",
                    "add",
                    STORE_CONN,
                    "--conn-uri",
                    store_url,
                    "--conn-description",
                    "Consent store (PostgreSQL)",
                ],
            },
            logs,
        )
        # The admin-side commands find the store's connection where `airflow connections add` put it
        # (the metadata DB), as users run them: no AIRFLOW_CONN_* for it.
        cli_env = dict(env)
        started = time.monotonic()
        with open(logs / "consents-import.log", "wb") as sink:
            code = subprocess.run(
                [str(BIN / "airflow-openbanking"), "consents", "import", "--conn-id", MANY_CONN, str(path)],
                env=cli_env,
                cwd=str(dep.root),
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=300,
            ).returncode
        path.unlink()
        if code != 0:
            tail = (logs / "consents-import.log").read_text(errors="replace")[-2000:]
            raise E2EError(f"airflow-openbanking consents import failed (exit {code}):\n{tail}")
        say(f"  airflow-openbanking consents import: {n} consents ({time.monotonic() - started:.0f} s)")

        run_id = f"e2e_many__{logical:%Y-%m-%d}"
        per_shard = math.ceil(n / SHARDS)
        api.call(
            "POST",
            f"/dags/{MAIN_DAG}/dagRuns",
            json={
                "dag_run_id": run_id,
                "logical_date": logical.isoformat(),
                "conf": {"conn_ids": [MANY_CONN], "consents_per_shard": per_shard},
                "note": f"make e2e: {n} consents in shards of {per_shard}",
            },
        )
        say(f"  triggered {run_id}: conn_ids [{MANY_CONN}], consents_per_shard {per_shard}")
        started = time.monotonic()
        last = ""
        while True:
            procs.check_alive()
            run = api.call("GET", f"/dags/{MAIN_DAG}/dagRuns/{run_id}")
            if run["state"] != last:
                say(f"  {run_id}: {run['state']}")
                last = run["state"]
            if run["state"] in ("success", "failed"):
                break
            if time.monotonic() - started > runs_timeout:
                raise E2EError(f"{run_id} not finished after {runs_timeout:.0f} s")
            time.sleep(3)
        summary["run_seconds"] = round(time.monotonic() - started, 1)
        tis = api.task_instances(MAIN_DAG, run_id)
        bad = sorted(f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in tis if t["state"] != "success")
        shard_tis = [t for t in tis if t["task_id"].startswith("shard.")]
        shards = len({t["map_index"] for t in shard_tis})
        checks.add(
            f"sharded run over {n} consents succeeded",
            run["state"] == "success" and not bad and shards >= 2,
            f"{run_id} {run['state']} in {summary['run_seconds']:.0f} s: {len(tis)} task instances "
            f"({shards} shards x {len(shard_tis) // max(shards, 1)} steps + {len(tis) - len(shard_tis)})"
            + (f"; not successful: {bad}" if bad else ""),
        )
        summary["task_instances"] = len(tis)
        dep.snapshot_listening(procs.group_ids)  # the many-consent bank is up too

        check_many_warehouse(checks, dep.warehouse_url, bank, run, [c["consent_id"] for c in consents])
        counters = bank.counters()
        summary["sandbox_counters"] = counters
        grants = counters.get("token_grants", {}).get("refresh_token", 0)
        invalid = counters.get("invalid_grant", 0)
        checks.add(
            "at most one refresh grant per consent, no invalid_grant",
            invalid == 0 and 0 < grants <= n,
            f"{grants} refresh grants for {n} consents ({grants / n:.2f} per consent; every consent landed "
            f"data, so each had at least one), invalid_grant {invalid}, API requests "
            f"{sum(counters.get('requests', {}).values())}",
        )
        summary["store"] = check_store(checks, dep, cli_env, logs, imported, bank, store_url)
        check_spread(checks, dep, run_id)
    finally:
        bank.stop()
    return summary


def check_many_warehouse(
    checks: Checks, url: str, bank: Any, run: dict[str, Any], consent_ids: list[str]
) -> None:
    name = "warehouse equals the bank's truth for every consent"
    try:
        rows = sql_rows(
            url,
            "SELECT consent_id, account_id, transaction_id, status, amount FROM openbanking_transactions"
            f" WHERE conn_id = '{MANY_CONN}'",
        )
    except Exception as exc:
        checks.add(name, False, f"{type(exc).__name__}: {exc}")
        return
    table: dict[tuple[str, str], dict[str, tuple[str, float]]] = {}
    for consent_id, account_id, txn_id, status, amount in rows:
        table.setdefault((consent_id, account_id), {})[txn_id] = (status, float(amount))
    (start, end), *_ = run_windows([run], [MANY_CONN])[MANY_CONN]
    problems: list[str] = []
    expected = 0
    empty_consents = []
    for consent_id in consent_ids:
        got_any = False
        for account in bank.truth_accounts(consent_id):
            truth = {t["transactionId"]: t for t in bank.truth_transactions(account["accountId"], start, end)}
            got = table.pop((consent_id, account["accountId"]), {})
            got_any = got_any or bool(got)
            expected += len(truth)
            if set(truth) != set(got):
                problems.append(
                    f"{consent_id}/{account['accountId']}: {len(set(truth) - set(got))} missing, "
                    f"{len(set(got) - set(truth))} extra"
                )
            for txn_id in set(truth) & set(got):
                if (
                    got[txn_id][0] != truth[txn_id]["status"]
                    or abs(got[txn_id][1] - float(truth[txn_id]["amount"])) > 1e-9
                ):
                    problems.append(f"{consent_id}/{account['accountId']}/{txn_id} differs")
        if not got_any:
            empty_consents.append(consent_id)
    if table:
        problems.append(f"rows of unexpected consents/accounts: {sorted(table)[:5]}")
    if expected == 0:
        problems.append("the bank has no transactions in the window: nothing was compared")
    checks.add(
        name,
        not problems and not empty_consents,
        f"{len(rows)} rows = the bank's {expected} transactions of {len(consent_ids)} consents x "
        f"{ACCOUNTS_PER_CUSTOMER} accounts, window {start}..{end}"
        + (f"; consents without rows: {empty_consents[:5]}" if empty_consents else "")
        + (f"; {problems[:5]}" if problems else ""),
    )


def check_store(
    checks: Checks,
    dep: Any,
    env: dict[str, str],
    logs: Path,
    imported: dict[str, str | None],
    bank: Any,
    store_url: str,
) -> dict[str, Any]:
    name = "rotated refresh tokens are in the consent store (encrypted)"
    with open(logs / "consent-store-probe.log", "wb") as err:
        proc = subprocess.run(
            [sys.executable, "-c", STORE_PROBE, MANY_CONN],
            env=env,
            cwd=str(dep.root),
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=300,
        )
    try:
        probe = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        checks.add(
            name, False, f"the store probe failed (exit {proc.returncode}): see logs/consent-store-probe.log"
        )
        return {}
    issued_tokens = bank.issued_secrets().get("refresh_tokens", [])
    issued = {fingerprint(t) for t in issued_tokens}
    records = probe["records"]
    rotated = [
        cid
        for cid, r in records.items()
        if r["refresh"] and r["refresh"] != imported.get(cid) and r["refresh"] in issued
    ]
    stale = sorted(set(imported) - set(rotated))
    # No token in plain text at rest: no issued refresh token appears anywhere in the table.
    plain = 0
    with contextlib.suppress(Exception):
        rows = sql_rows(store_url, "SELECT * FROM openbanking_consents")
        text = "\n".join(str(r) for r in rows)
        plain = sum(1 for t in issued_tokens if t and t in text)
    checks.add(
        name,
        len(rotated) == len(imported) and probe["encrypted"] and plain == 0,
        f"{len(rotated)}/{len(imported)} consents hold a rotated refresh token (not the imported one, one "
        f"the bank issued) in {probe['store']} (encrypted: {probe['encrypted']}); plain-text tokens in "
        f"the table: {plain}" + (f"; not rotated: {stale[:5]}" if stale else ""),
    )
    return {"store": probe["store"], "encrypted": probe["encrypted"], "rotated": len(rotated)}


def check_spread(checks: Checks, dep: Any, run_id: str) -> None:
    counts = {}
    for name in ("worker-1", "worker-2"):
        logs = dep.worker_dir(name) / "logs"
        counts[name] = len(
            list(logs.glob(f"dag_id={MAIN_DAG}/run_id={run_id}/task_id=shard.*/**/attempt=*.log"))
        )
    checks.add(
        "the shards ran on both Celery workers",
        all(counts.values()),
        f"shard task logs on each worker's own disk: {counts}",
    )
