"""Hostile or bad input: ids with path and URL syntax, oversized pages, wrong types, bad settings.

Each must end with a clear error or with the data handled as opaque text -- never with a file
outside the destination, a request to another endpoint, or a half-loaded table.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
from airflow_provider_openbanking.landing import read_records, safe_segment
from airflow_provider_openbanking.transport import path_segment
from tests.faults.harness import log_text, only, only_files, run_main

pytestmark = pytest.mark.faults

CONNS = ["ob_a", "ob_b"]
#: Ids a buggy or malicious server could hand out: traversal, URL syntax, encoded traversal,
#: separators of other systems, control characters, Jinja (evaluated, it would send the client
#: secret to the API).
HOSTILE = [
    "../../../../etc/passwd",
    "..",
    "x/../../customers/current?resultType=details#frag",
    "%2e%2e%2f%2e%2e%2f{{ 6 * 7 }}",
    "C:\\Windows\\..\\evil name\n",
    "{{ conn.ob_a.password }}/",
]
FDX_TEMPLATES = {
    "POST /api/v1/token",
    "GET /api/fdx/5/accounts",
    "GET /api/fdx/5/accounts/{accountId}/transactions",
}


def _landed(tmp_path: Path, env: Any) -> list[Path]:
    """Every file the run wrote under the test's directory, asserting that each one (but the
    warehouse database) resolves inside the landing destination."""
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != env.db]
    for path in files:
        assert path.resolve().is_relative_to(env.landing.resolve()), path
    return files


def _unalias_record(text: str, served_to_real: dict[str, str]) -> Any:
    record = json.loads(text)
    if isinstance(record, dict) and record.get("accountId") in served_to_real:
        record["accountId"] = served_to_real[record["accountId"]]
    return record


def test_hostile_account_ids_are_opaque_to_urls_and_paths(fsb, consent, main_dag, env, baseline, tmp_path):
    real = [a["accountId"] for c in ("cust-0001", "cust-0002") for a in fsb.truth_accounts(c)]
    aliases = dict(zip(real, HOSTILE, strict=True))
    served_to_real = {v: k for k, v in aliases.items()}
    fsb.configure(id_aliases=aliases)
    conns = [consent(c) for c in CONNS]

    outcome = run_main(main_dag, env, conns)

    assert outcome.ok, outcome.problems
    assert sorted(outcome.transactions("success")) == sorted(
        f"{c} {a['accountId']}"
        for c, cust in zip(CONNS, ("cust-0001", "cust-0002"), strict=True)
        for a in fsb.truth_accounts(cust)  # the bank's truth shows the served (hostile) ids
    )
    # Requests: only the three endpoints the DAG calls, one per page, none redirected elsewhere.
    requests = fsb.counters()["requests"]
    assert set(requests) == FDX_TEMPLATES, requests
    pages = 0
    for account_id in real:
        window = fsb.truth_transactions(aliases[account_id], "2026-11-02", "2026-11-16")
        pages += max(1, math.ceil(len(window) / 5))
    assert requests["GET /api/fdx/5/accounts/{accountId}/transactions"] == pages

    # Files: all inside the destination, under percent-encoded names, nothing anywhere else.
    landed = _landed(tmp_path, env)
    assert {p.name for p in landed if "_manifests" not in p.parts} == {"accounts.jsonl.gz"} | {
        f"account_id={safe_segment(h)}.jsonl.gz" for h in HOSTILE
    }
    expected = only_files(CONNS, baseline.files)
    for path, data in expected.items():
        for account_id, hostile in aliases.items():
            path = path.replace(
                f"account_id={account_id}.jsonl.gz", f"account_id={safe_segment(hostile)}.jsonl.gz"
            )
        got = outcome.files[path]
        assert [_unalias_record(line, served_to_real) for line in got.decode().splitlines()] == [
            _unalias_record(line, served_to_real) for line in data.decode().splitlines()
        ], path

    # The table holds the ids as data, rows otherwise equal to the fault-free run's.
    def unaliased(row: tuple[Any, ...]) -> tuple[Any, ...]:
        record = _unalias_record(row[-1], served_to_real)
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return (row[0], row[1], served_to_real[row[2]], *row[3:-1], text)

    assert {r[2] for r in outcome.table} == set(HOSTILE)
    assert sorted(unaliased(r) for r in outcome.table) == only(CONNS, baseline.table)


def test_hostile_statement_ids_land_inside_the_destination(fsb, consent, dagbag, env, tmp_path):
    account = fsb.truth_accounts("cust-0001")[0]["accountId"]
    hook_conn = consent("ob_a")
    hook = OpenBankingHook(hook_conn)
    statements = [s["statementId"] for s in hook.iter_statements(account, "2026-10-01", "2026-10-31")]
    assert len(statements) == 1
    pdf = b"".join(hook.download_statement(account, statements[0]))
    hook.close()
    hostile_account, hostile_statement = "../../statement_files", "../../../../tmp/evil?download=1#x"
    fsb.configure(id_aliases={account: hostile_account, statements[0]: hostile_statement})

    dagrun = dagbag.get_dag("openbanking_statements").test(
        logical_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc), run_conf={"conn_ids": [hook_conn]}
    )

    assert str(dagrun.state) in ("success", "DagRunState.SUCCESS")
    landed = _landed(tmp_path, env)
    folder = (
        env.landing
        / "statement_files"
        / "conn_id=ob_a"
        / "consent_id=default"
        / "interval=20261001T000000Z_20261101T000000Z"
    )
    target = folder / f"account_id={safe_segment(hostile_account)}" / f"{safe_segment(hostile_statement)}.pdf"
    assert target in landed and target.read_bytes() == pdf
    listing = env.landing / "statements" / "conn_id=ob_a" / "consent_id=default" / folder.name
    records = read_records(str(listing / f"account_id={safe_segment(hostile_account)}.jsonl.gz"))
    assert [r["statementId"] for r in records] == [hostile_statement]
    # Each id went out as exactly one path segment, so the sandbox found every resource.
    assert path_segment(hostile_statement) == "..%2F..%2F..%2F..%2Ftmp%2Fevil%3Fdownload%3D1%23x"
    assert set(fsb.counters()["status"]) == {"200"}


def test_oversized_pages_and_wrong_types_fail_clearly_without_damage(
    fsb, consent, main_dag, env, baseline, capfd, caplog
):
    """A page larger than ``max_response_bytes`` (with or without a Content-Length) is refused;
    a record that is not an object fails its account; a transaction whose fields have the wrong
    type lands as the bank sent it (the landing zone is raw) but is refused by the load, whose
    other windows still load. The warehouse already holds the fault-free run's rows: none of them
    changes."""
    a = [acc["accountId"] for acc in fsb.truth_accounts("cust-0001")]
    b = [acc["accountId"] for acc in fsb.truth_accounts("cust-0002")]
    conns = [consent("ob_a"), consent("ob_b", max_response_bytes=65536)]
    shutil.copy(baseline.db, env.db)
    page = {"count": 99, "with_offset": True}
    fsb.inject(
        {"kind": "corrupt", "record": 42, "path": f"/accounts/{a[0]}/transactions", **page},
        {"kind": "corrupt", "set": {"amount": "n/a"}, "path": f"/accounts/{a[1]}/transactions"},
        {"kind": "corrupt", "set": {"transactionId": {"id": 1}}, "path": f"/accounts/{b[0]}/transactions"},
        {"kind": "oversized", "bytes": 200_000, "path": f"/accounts/{b[1]}/transactions", **page},
        {
            "kind": "oversized",
            "bytes": 200_000,
            "chunked": True,
            "path": f"/accounts/{b[2]}/transactions",
            **page,
        },
    )

    outcome = run_main(main_dag, env, conns)

    assert outcome.failed
    refused = {f"ob_a {a[0]}", f"ob_b {b[1]}", f"ob_b {b[2]}"}
    for label, state in outcome.transactions().items():
        assert state == ("failed" if label in refused else "success"), label
    assert not refused & set(outcome.transactions("success"))
    assert outcome.state_of("load_transactions") == "failed"
    assert outcome.table == baseline.table, "no row of the warehouse changed"
    expected = only_files(conns, baseline.files)
    assert set(outcome.files) == {
        k for k in expected if not any(f"account_id={x}." in k for x in (a[0], b[1], b[2]))
    }
    for path, data in outcome.files.items():
        changed = [x for x, y in zip(data.splitlines(), expected[path].splitlines(), strict=True) if x != y]
        assert len(changed) == (1 if any(f"account_id={x}." in path for x in (a[1], b[0])) else 0), path

    log = log_text(capfd, caplog)
    assert "bad record: expected an object, got int" in log
    assert (
        log.count(
            f"accounts/{b[1]}/transactions failed, HTTP 200: the response body is larger than 65536 bytes"
        )
        >= 1
    )
    assert (
        f"accounts/{b[2]}/transactions failed, HTTP 200: the response body is larger than 65536 bytes" in log
    )
    assert "amount 'n/a' is not a number" in log
    assert "transactionId {'id': 1} is not a string" in log
