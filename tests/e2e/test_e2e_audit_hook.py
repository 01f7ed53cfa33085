"""The local-write audit hook ``make e2e`` arms in its Celery workers and triggerer (e2e/audit/).

If it missed writes, the e2e's "the provider wrote no file outside S3 and the workers' own
directories" would pass for nothing: the provider's landing writer, pointed at a local directory,
must be reported outside the allowed directory and as allowed inside it, in the process itself and
in a forked child (Celery's pool and Airflow's task runner are forks); Airflow's own writes are not
the provider's and are not reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import os, sys
from airflow.sdk import ObjectStoragePath
from airflow_provider_openbanking.landing import write_jsonl
outside, inside, airflow_file = sys.argv[1:4]
write_jsonl(ObjectStoragePath("file://" + inside + "/x.jsonl"), [{"a": 1}])
pid = os.fork()
if pid == 0:
    write_jsonl(ObjectStoragePath("file://" + outside + "/x.jsonl"), [{"a": 1}])
    os._exit(0)
os.waitpid(pid, 0)
with open(airflow_file, "w") as f:   # not provider code: not reported
    f.write("x")
"""


def test_audit_hook_reports_provider_writes_outside_the_allowed_directory(tmp_path: Path) -> None:
    report = tmp_path / "audit.jsonl"
    outside, inside = tmp_path / "outside", tmp_path / "worker"
    inside.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "e2e" / "audit"),
        "OPENBANKING_E2E_AUDIT": str(report),
        "OPENBANKING_E2E_AUDIT_ALLOWED": str(inside),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(outside), str(inside), str(tmp_path / "airflow.txt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in report.read_text().splitlines()]
    armed = [r for r in records if "armed" in r]
    writes = [r for r in records if "armed" not in r]
    assert len(armed) == 1
    bad = [r for r in writes if not r["allowed"]]
    good = [r for r in writes if r["allowed"]]
    assert bad and all(any(p.startswith(str(outside)) for p in r["paths"]) for r in bad)
    assert {r["pid"] for r in bad} != {armed[0]["armed"]}, "the forked child's writes are reported"
    assert good and all(all(p.startswith(str(inside)) for p in r["paths"]) for r in good)
    assert not any("airflow.txt" in p for r in writes for p in r["paths"])
    assert all("landing.py" in " ".join(r["stack"]) for r in writes)
