"""The sharded many-consent run of issue 14 under the production shape (placeholder until the
sharded DAGs and the consent store land)."""

from __future__ import annotations

from typing import Any


def run_many_consents(
    consents: int, dep: Any, api: Any, procs: Any, checks: Any, logs: Any
) -> dict[str, Any]:
    checks.add("sharded many-consent run", False, "not available yet")
    return {}
