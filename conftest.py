"""Test-session setup that must run before Airflow is imported anywhere.

Every test session gets a throw-away ``AIRFLOW_HOME`` (SQLite metadata DB, no example DAGs), so tests
never touch a user's Airflow and always start from a migrated, empty database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

pytest_plugins = ["tests.fixtures_openbanking"]

_HOME = Path(tempfile.mkdtemp(prefix="ob-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "dags")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"
# Tests call only the sandbox on loopback: make sure no proxy setting sends them elsewhere.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

subprocess.run(
    [sys.executable, "-m", "airflow", "db", "migrate"],
    check=True,
    stdout=subprocess.DEVNULL,
    env=os.environ.copy(),
)


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)
