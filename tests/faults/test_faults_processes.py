"""Faults that need real processes: a task killed mid-write, the same interval run twice at once.

- The transactions task of one account runs in its own process and is SIGKILLed while its file
  is half-written (a hidden ``.partial`` beside the final path). Like a scheduler finding a task
  without heartbeat, the task instance is then up for retry; the retry lands the full file,
  removes the dead attempt's ``.partial``, and the run ends exactly like a fault-free run.
- Two runs of the same data interval (two logical dates, one interval) run at the same moment in
  two processes, writing the same files and replacing the same warehouse windows: both succeed
  and the result is exactly that of one fault-free run.

In both, the write buffer of the landing files is made tiny in the task processes, so a file is
on disk (as a ``.partial``) from its first record on, as a large account's file would be: the
fault window is the whole pagination instead of a few microseconds.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest

from tests.faults.harness import (
    INTERVAL,
    LOGICAL,
    ForkedTasks,
    log_text,
    only,
    only_files,
    run_concurrently,
    run_main,
)

pytestmark = pytest.mark.faults

CONNS = ["ob_a", "ob_b"]


def tiny_write_buffer() -> None:
    from airflow_provider_openbanking import landing

    landing._FLUSH_BYTES = 200


def test_task_killed_mid_write_is_retried_and_leaves_no_trace(
    fsb, consent, main_dag, env, baseline, monkeypatch, capfd, caplog
):
    conns = [consent(c) for c in CONNS]
    jobs = sorted(
        (conn_id, acc["accountId"])
        for conn_id, customer in (("ob_a", "cust-0001"), ("ob_b", "cust-0002"))
        for acc in fsb.truth_accounts(customer)
    )
    # An account of ob_b: map index 1 of the shard transactions tasks (one shard per connection).
    victim = next(job for job in jobs if job[0] == "ob_b")
    folder = env.landing / "transactions" / f"conn_id={victim[0]}" / "consent_id=default" / INTERVAL
    final = folder / f"account_id={victim[1]}.jsonl.gz"
    seen: dict[str, object] = {}

    def kill_mid_write(ti: object, process: object) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            partials = list(folder.glob(f".{final.name}.*.partial")) if folder.exists() else []
            if partials and partials[0].stat().st_size > 0:
                break
            time.sleep(0.005)
        else:
            pytest.fail("the task never started writing")
        os.kill(process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        process.join(10)  # type: ignore[attr-defined]
        seen.update(partial=partials[0].name, size=partials[0].stat().st_size, final=final.exists())
        fsb.configure(latency_ms=0)

    fsb.configure(latency_ms=150)  # the victim's pages come slowly: it is killed between two
    forked = ForkedTasks(
        monkeypatch,
        lambda ti: ti.task_id == "shard.land_transactions" and ti.map_index == 1 and ti.try_number == 1,
        setup=tiny_write_buffer,
        supervise=kill_mid_write,
    )

    outcome = run_main(main_dag, env, conns)

    assert forked.join() == [-signal.SIGKILL]
    assert seen["size"] and seen["final"] is False, seen  # half a file, hidden, nothing at the final path
    assert outcome.ok, outcome.problems
    # The victim's shard (its connection's) was retried; the other shard ran once.
    for other in outcome.transactions():
        expected = 2 if other.split(" ")[0] == victim[0] else 1
        assert outcome.tries_of("land_transactions", other) == expected, other
    assert outcome.table == only(CONNS, baseline.table)
    assert outcome.files == only_files(CONNS, baseline.files)  # the dead attempt's .partial is gone
    assert "Removed a partial file left by an interrupted run" in log_text(capfd, caplog)


def test_same_interval_run_twice_at_once(fsb, consent, main_dag, env, baseline, capfd, caplog):
    conns = [consent(c) for c in CONNS]
    slow = fsb.truth_accounts("cust-0001")[0]["accountId"]
    # One account's second page answers 429 + Retry-After 2 s, once in each run: both runs are
    # writing that account's file during those 2 s, whatever order they take the accounts in.
    fsb.inject(
        {
            "kind": "status",
            "status": 429,
            "retry_after": 2,
            "count": 2,
            "with_offset": True,
            "path": f"/accounts/{slow}/transactions",
        }
    )
    # Both logical dates fall in the same daily interval, [11-16, 11-17).
    dates = [LOGICAL, LOGICAL + dt.timedelta(hours=6)]

    codes, outcomes = run_concurrently(main_dag, env, conns, dates, setup=tiny_write_buffer)

    log = log_text(capfd, caplog)
    assert codes == [0, 0], log[-3000:]
    # the two runs really wrote the same file at the same time
    assert "another writer of the same file is at work" in log
    for outcome in outcomes:
        assert outcome.ok, outcome.problems
        assert set(outcome.tries.values()) == {1}
        assert {
            x[3]["interval_start"]
            for x in outcome.xcoms
            if x[:3:2] == ("shard.land_transactions", "return_value")
        } == {"2026-11-16T00:00:00+00:00"}
    assert outcomes[0].dagrun.run_id != outcomes[1].dagrun.run_id
    assert outcomes[1].table == only(CONNS, baseline.table)
    assert outcomes[1].files == only_files(CONNS, baseline.files)
    assert fsb.counters()["faults_injected"] == 2
