"""Benchmarks of airflow-provider-openbanking against the local sandbox (issue 7).

``python -m benchmarks`` (or ``make bench``) runs them all and writes ``benchmarks/RESULTS.md``.
Benchmarks are not tests: they print figures and assert nothing. Every figure is a ratio to a
baseline measured in the same run (the median of several runs of each), so the figures compare
code paths on this machine rather than report absolute speeds.

Each measurement runs in a child process (``python -m benchmarks.worker``), so that memory is
the peak RSS of one extraction task, imports are paid the same way by both sides of a ratio, and
task logs go to ``benchmarks/.runs/logs/`` instead of the terminal. The sandbox runs in its own
process too (``SandboxServer``), on 127.0.0.1 only.

Modules: :mod:`.throughput`, :mod:`.latency`, :mod:`.memory`, :mod:`.tokens`, :mod:`.parse` (the
five figures of the issue), :mod:`.hotpath` (where the time goes: per-stage costs of one
page and a cProfile of the operator's code path), :mod:`.formats` (bytes and CPU per
transaction of each landing format, issue 18), :mod:`.consents` and :mod:`.scale` (consent stores
and one shard task, issue 14) and :mod:`.moonshot` (issue 14: the sharded DAG under Airflow's real
services -- scheduler, LocalExecutor, PostgreSQL -- at thousands of consents, against the 0.x
per-consent DAG kept in ``benchmarks/dags/``; ``make bench-moonshot`` runs it alone).
"""
