"""C. Consents at scale: refresh grants across processes, store cost, masking cost.

``python -m benchmarks --only consents`` runs this section alone.

C1. **Refresh grants per consent per access-token lifetime across N task processes.** N processes
(``python -m benchmarks.worker``, a fresh interpreter each, as Airflow runs task instances) start
together (they wait for a go-file) and each asks for an access token of every one of C consents of
one connection, within one token lifetime (300 s). The sandbox's ``token_grants`` counter says how
many refresh grants were made. With a shared store (SQL on SQLite, Airflow Variables in the
metadata DB) the consent's refresh lease lets one process make the grant and the others use the
access token it stored: target 1 per consent. Baseline, same run: the in-memory store (nothing
shared between processes: what every process did before consents had a store).

C2. **Store cost per consent at 100, 1,000 and 10,000 consents**, per backend: import
(``save_many``), batch read (``load_many`` of every id), listing the ids (``consent_ids``), one
read (``load``, 200 samples) and one rotation write (``compare_and_swap``, 100 samples). Variables
are measured on the path the CLI takes (metadata DB, SQLite here, Fernet key set); inside a task
each read or write is one execution-API round trip instead, not measured here.

C3. **Masking cost per consent at 100, 1,000 and 10,000 consents**: registering a consent's two
tokens with the provider's :class:`~airflow_provider_openbanking.consents.masking.TokenRedactor`
plus redacting one 300-character log line, per consent, after N consents were registered in the
same process; and the whole hook path (``for_consent`` + refresh/access token registered + one
redacted message). Baseline, same run: Airflow's own ``SecretsMasker.add_mask`` + ``redact`` at
100 and 1,000 registered secrets (it recompiles one pattern over every secret on each add, so
10,000 would take hours to build up).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import RUNS_DIR, Figure, Section, Sizes, child_env, run_child, sandbox, say

HOME = RUNS_DIR / "consents-home"
CONN = "openbanking_consents_bench"


def _token() -> str:
    return secrets.token_urlsafe(32)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = child_env(extra)
    env["AIRFLOW_HOME"] = str(HOME)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(HOME / "dags")
    return env


def _migrate(env: dict[str, str]) -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- C1: refresh grants across processes --------------------------------------------------------


def grants_child(p: dict[str, Any], hook: Any = None) -> dict[str, Any]:
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    hook = hook or OpenBankingHook(p["conn_id"])
    go = Path(p["go_file"])
    Path(p["ready_file"]).write_text("ready")
    while not go.exists():
        time.sleep(0.01)
    t0 = time.perf_counter()
    for consent in p["consents"]:
        hook.for_consent(consent).get_access_token()
    return {"seconds": time.perf_counter() - t0}


def _grants(
    server: Any, store: str, processes: int, consents: int, env_extra: dict[str, str]
) -> dict[str, Any]:
    conn_id = f"{CONN}_{store.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    extra: dict[str, Any] = {"retry_initial_wait": 0.05, "rotation_wait": 5}
    if store == "sql":
        extra["consent_store_conn_id"] = "consents_bench_db"
    elif store == "memory":
        extra["consent_store"] = "memory"
    conn = {
        "conn_type": "openbanking",
        "host": server.url,
        "login": "demo-client",
        "password": "demo-secret",
        "extra": extra,
    }
    env = {**env_extra, f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}
    ids = [f"cust-{i:03}" for i in range(consents)]
    tokens = {c: server.grant_consent(f"cust-{(i % 3) + 1:04}") for i, c in enumerate(ids)}
    if store != "memory":  # the import, as `consents import` does it
        run_child(
            "benchmarks.consents:import_child",
            {"env": env, "conn_id": conn_id, "tokens": tokens},
            log_name="consents-grants",
        )
    else:  # every process gets the tokens in its own memory store
        env["BENCH_CONSENT_TOKENS"] = json.dumps(tokens)
    before = server.counters()["token_grants"]["refresh_token"]
    scratch = RUNS_DIR / f"go-{uuid.uuid4().hex[:6]}"
    scratch.mkdir(parents=True)
    procs = []
    for i in range(processes):
        params = {
            "conn_id": conn_id,
            "consents": ids,
            "go_file": str(scratch / "go"),
            "ready_file": str(scratch / f"ready-{i}"),
            "result_path": str(scratch / f"result-{i}.json"),
        }
        target = (
            "benchmarks.consents:grants_child"
            if store != "memory"
            else "benchmarks.consents:memory_grants_child"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", target],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=open(RUNS_DIR / "logs" / "consents-grants.log", "ab"),  # noqa: SIM115
            env=_env(env),
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(params).encode())
        proc.stdin.close()
        procs.append(proc)
    deadline = time.monotonic() + 300
    while len(list(scratch.glob("ready-*"))) < processes and time.monotonic() < deadline:
        time.sleep(0.05)
    (scratch / "go").write_text("go")
    codes = [p.wait(timeout=300) for p in procs]
    if any(codes):
        raise RuntimeError(f"grant children failed: {codes}; see {RUNS_DIR / 'logs' / 'consents-grants.log'}")
    grants = server.counters()["token_grants"]["refresh_token"] - before
    seconds = [json.loads((scratch / f"result-{i}.json").read_text())["seconds"] for i in range(processes)]
    return {"grants": grants, "per_consent": grants / consents, "seconds": max(seconds)}


def memory_grants_child(p: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_openbanking.consents import ConsentRecord
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    hook = OpenBankingHook(p["conn_id"])
    tokens = json.loads(os.environ["BENCH_CONSENT_TOKENS"])
    hook.consent_store.save_many(ConsentRecord(p["conn_id"], c, refresh_token=t) for c, t in tokens.items())
    return grants_child(p, hook)


def import_child(p: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_openbanking.consents import ConsentRecord
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    hook = OpenBankingHook(p["conn_id"])
    n = hook.consent_store.save_many(
        ConsentRecord(p["conn_id"], c, refresh_token=t) for c, t in p["tokens"].items()
    )
    return {"imported": n}


# -- C2: store cost -----------------------------------------------------------------------------


def _store(kind: str, p: dict[str, Any]) -> Any:
    from airflow_provider_openbanking.consents import InMemoryConsentStore, VariableConsentStore
    from airflow_provider_openbanking.consents.sql import SqlConsentStore

    if kind == "memory":
        return InMemoryConsentStore()
    if kind == "variable":
        return VariableConsentStore()
    return SqlConsentStore(p["sql_conn_ids"][kind])


def _per(seconds: float, n: int) -> float:
    return seconds / n * 1e6  # µs per consent


def store_child(p: dict[str, Any]) -> list[dict[str, Any]]:
    import random

    from airflow_provider_openbanking.consents import ConsentRecord

    rows = []
    rng = random.Random(7)
    for kind in p["backends"]:
        for n in p["sizes"]:
            store = _store(kind, p)
            conn_id = f"bench_{kind.replace('-', '_')}_{n}_{uuid.uuid4().hex[:6]}"
            records = [ConsentRecord(conn_id, f"cust-{i:05}", refresh_token=_token()) for i in range(n)]
            ids = [r.consent_id for r in records]
            t0 = time.perf_counter()
            store.save_many(records)
            t_import = time.perf_counter() - t0
            t0 = time.perf_counter()
            listed = store.consent_ids(conn_id)
            t_ids = time.perf_counter() - t0
            assert len(listed) == n, (kind, n, len(listed))
            t0 = time.perf_counter()
            batch = store.load_many(conn_id, ids)
            t_batch = time.perf_counter() - t0
            assert len(batch) == n
            sample = rng.sample(ids, min(n, p["reads"]))
            t0 = time.perf_counter()
            for cid in sample:
                store.load(conn_id, cid)
            t_read = (time.perf_counter() - t0) / len(sample)
            sample = rng.sample(ids, min(n, p["writes"]))
            t0 = time.perf_counter()
            for cid in sample:
                current = store.load(conn_id, cid)
                store.compare_and_swap(current.replace(refresh_token=_token()), current.version)
            t_write = (time.perf_counter() - t0) / len(sample)
            rows.append(
                {
                    "backend": kind,
                    "n": n,
                    "import_us": _per(t_import, n),
                    "batch_read_us": _per(t_batch, n),
                    "ids_ms": t_ids * 1e3,
                    "read_ms": t_read * 1e3,
                    "write_ms": t_write * 1e3,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            store.close()
    return rows


# -- C3: masking ----------------------------------------------------------------------------------


def masking_child(p: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_openbanking.consents.masking import TokenRedactor
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    def line(token: str) -> str:
        return ("POST /api/v1/token failed: HTTP 400 invalid_grant for refresh token " + token).ljust(
            300, "."
        )

    ours = []
    for n in p["sizes"]:
        redactor = TokenRedactor()
        for _ in range(n - 50):
            redactor.add(_token())
            redactor.add(_token())
        last = [(_token(), _token()) for _ in range(50)]
        t0 = time.perf_counter()
        for refresh, access in last:  # the per-consent cost, measured at n consents
            redactor.add(refresh)
            redactor.add(access)
            assert access not in redactor.redact(line(access))
        ours.append({"n": n, "per_consent_us": (time.perf_counter() - t0) / len(last) * 1e6})

    hook_path = []
    for n in p["sizes"]:
        hook = OpenBankingHook(p["conn_id"])
        _ = hook.config
        t_last = 0.0
        for i in range(n):
            t0 = time.perf_counter()
            consent = hook.for_consent(f"cust-{i:05}")
            refresh, access = _token(), _token()
            consent._remember_secret(refresh)
            consent._remember_secret(access)
            text = consent.redact(line(refresh))
            if i >= n - 50:
                t_last += time.perf_counter() - t0
            assert refresh not in text
        hook_path.append({"n": n, "per_consent_us": t_last / 50 * 1e6})

    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker

    airflow = []
    for n in p["airflow_sizes"]:
        masker = SecretsMasker()
        for _ in range(n - 10):
            masker.add_mask(_token())
            masker.add_mask(_token())
        last = [(_token(), _token()) for _ in range(10)]
        t0 = time.perf_counter()
        for refresh, access in last:
            masker.add_mask(refresh)
            masker.add_mask(access)
            assert access not in str(masker.redact(line(access)))
        airflow.append({"n": n, "per_consent_us": (time.perf_counter() - t0) / len(last) * 1e6})
    return {"ours": ours, "hook": hook_path, "airflow": airflow}


# -- the section ----------------------------------------------------------------------------------


def _fmt_us(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} µs" if us >= 10 else f"{us:.1f} µs"


def run(sizes: Sizes) -> Section:
    quick = sizes.runs < 5
    store_sizes = (100, 1_000) if quick else (100, 1_000, 10_000)
    mask_sizes = (100, 1_000, 10_000)
    airflow_sizes = (100, 300) if quick else (100, 1_000)
    processes, consents = (4, 3) if quick else (8, 4)
    key = _fernet_key()
    (RUNS_DIR / "logs").mkdir(parents=True, exist_ok=True)
    base_env = {
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(HOME / "dags"),
        "AIRFLOW__CORE__FERNET_KEY": key,
        "AIRFLOW_CONN_CONSENTS_BENCH_DB": f"sqlite:///{HOME / 'consents.db'}",
    }
    say("consents: migrating a throw-away metadata DB for the Variable store")
    _migrate(_env(base_env))

    figures: list[Figure] = []
    lines: list[str] = []

    # C1
    grant_rows = []
    with sandbox(customers=3, accounts_per_customer=2, transactions_per_account=10) as server:
        for store in ("memory", "sql", "variable"):
            result = _grants(server, store, processes, consents, base_env)
            grant_rows.append((store, result))
            say(
                f"consents C1 {store}: {result['grants']} grants for {consents} consents x {processes} processes"
            )
    by = dict(grant_rows)
    for store, label in (("sql", "SQL store (SQLite)"), ("variable", "Variable store")):
        figures.append(
            Figure(
                f"C1. Consents: refresh grants per consent per token lifetime, {processes} task processes, {label}",
                f"{by[store]['per_consent']:.2f} ({by[store]['grants']} grants, {consents} consents)",
                "1",
                by[store]["per_consent"] <= 1.0,
                f"in-memory store (nothing shared): {by['memory']['per_consent']:.2f} per consent",
            )
        )
    lines += [
        f"{processes} processes started together, each asking for an access token of each of {consents} "
        "consents of one connection (sandbox, 300 s access tokens):",
        "",
        "| store | refresh grants | per consent | slowest process (s) |",
        "|---|---|---|---|",
        *(
            f"| {store} | {r['grants']} | {r['per_consent']:.2f} | {r['seconds']:.2f} |"
            for store, r in grant_rows
        ),
        "",
    ]

    # C2
    backends = ["memory", "variable", "sql-sqlite"]
    sql_conn_ids = {"sql-sqlite": "consents_bench_db"}
    env = dict(base_env)
    pg = None
    try:
        import psycopg2  # noqa: F401

        from e2e.services import ServiceError, start_postgres

        pg = start_postgres(RUNS_DIR / "consents-pg")
        env["AIRFLOW_CONN_CONSENTS_BENCH_PG"] = pg.create_database("consents").replace(
            "postgresql://", "postgres://"
        )
        sql_conn_ids["sql-postgres"] = "consents_bench_pg"
        backends.append("sql-postgres")
    except (ImportError, ServiceError, OSError) as exc:  # reported, not hidden
        lines += [f"PostgreSQL not measured: {exc}", ""]
    try:
        say(
            f"consents C2: store cost at {', '.join(map(str, store_sizes))} consents, backends {', '.join(backends)}"
        )
        rows = run_child(
            "benchmarks.consents:store_child",
            {
                "env": env,
                "backends": backends,
                "sizes": list(store_sizes),
                "reads": 200,
                "writes": 100,
                "sql_conn_ids": sql_conn_ids,
            },
            log_name="consents-store",
            timeout=3600,
        )
    finally:
        if pg is not None:
            pg.stop()
    lines += [
        "Store cost per consent (µs per consent for import and batch read; ms per call otherwise):",
        "",
        "| backend | consents | import / consent | batch read / consent | list ids (ms) | one read (ms) | one rotation write (ms) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['backend']} | {r['n']:,} | {_fmt_us(r['import_us'])} | {_fmt_us(r['batch_read_us'])} | "
            f"{r['ids_ms']:.2f} | {r['read_ms']:.2f} | {r['write_ms']:.2f} |"
            for r in rows
        ),
        "",
        "The Variable store's rotation write includes its 50 ms settle (write, wait, read back: Variables "
        "have no conditional write); the SQL store's is one conditional UPDATE.",
        "",
    ]
    small, big = store_sizes[0], store_sizes[-1]
    for backend in backends:
        at = {r["n"]: r for r in rows if r["backend"] == backend}
        ratio = at[big]["batch_read_us"] / at[small]["batch_read_us"]
        figures.append(
            Figure(
                f"C2. Consent store, {backend}: batch read per consent, {big:,} vs {small:,} consents",
                f"{ratio:.2f}x ({_fmt_us(at[big]['batch_read_us'])} vs {_fmt_us(at[small]['batch_read_us'])}; "
                f"import {_fmt_us(at[big]['import_us'])}/consent at {big:,})",
                "flat (≤ 2x)",
                ratio <= 2.0,
                f"same backend at {small:,} consents",
            )
        )

    # C3
    say("consents C3: masking cost per consent")
    conn = {
        "conn_type": "openbanking",
        "host": "http://127.0.0.1:9",
        "login": "c",
        "password": "demo-secret-xyz",
    }
    mask = run_child(
        "benchmarks.consents:masking_child",
        {
            "env": {
                **env,
                "AIRFLOW_CONN_MASK_BENCH": json.dumps({**conn, "extra": {"consent_store": "memory"}}),
            },
            "conn_id": "mask_bench",
            "sizes": list(mask_sizes),
            "airflow_sizes": list(airflow_sizes),
        },
        log_name="consents-masking",
        timeout=3600,
    )
    ours = {r["n"]: r["per_consent_us"] for r in mask["ours"]}
    hook = {r["n"]: r["per_consent_us"] for r in mask["hook"]}
    af = {r["n"]: r["per_consent_us"] for r in mask["airflow"]}
    ratio = ours[mask_sizes[-1]] / ours[mask_sizes[0]]
    hook_ratio = hook[mask_sizes[-1]] / hook[mask_sizes[0]]
    af_small, af_big = airflow_sizes[0], airflow_sizes[-1]
    figures.append(
        Figure(
            f"C3. Masking: cost per consent at {mask_sizes[-1]:,} vs {mask_sizes[0]:,} consents in one process",
            f"{ratio:.2f}x ({_fmt_us(ours[mask_sizes[-1]])} vs {_fmt_us(ours[mask_sizes[0]])}); "
            f"hook path {hook_ratio:.2f}x ({_fmt_us(hook[mask_sizes[-1]])})",
            "flat (≤ 1.5x)",
            ratio <= 1.5 and hook_ratio <= 1.5,
            f"Airflow's masker: {_fmt_us(af[af_big])} per consent at {af_big:,} vs {_fmt_us(af[af_small])} at {af_small:,} "
            f"({af[af_big] / af[af_small]:.0f}x)",
        )
    )
    lines += [
        "Masking cost per consent (two tokens registered + one 300-character line redacted), after N "
        "consents were registered in the same process:",
        "",
        "| consents | TokenRedactor | hook path (for_consent + tokens + redact) | Airflow SecretsMasker |",
        "|---|---|---|---|",
        *(
            f"| {n:,} | {_fmt_us(ours[n])} | {_fmt_us(hook[n])} | {_fmt_us(af[n]) if n in af else 'not run (hours to build up)'} |"
            for n in sorted(set(mask_sizes) | set(airflow_sizes))
            if n in ours or n in af
        ),
        "",
    ]
    return Section("C. Consents at scale", figures, "\n".join(lines))
