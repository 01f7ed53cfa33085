"""``docs/api.md`` is what ``scripts/gen_api_docs.py`` generates from the current docstrings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts" / "gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render()
    for name in (
        "OpenBankingHook",
        "OpenBankingTransactionsOperator",
        "OpenBankingTokenSensor",
        "OpenBankingTokenTrigger",
        "LogNotifier",
    ):
        assert f"### `{name}`" in expected, name
    assert (ROOT / "docs" / "api.md").read_text() == expected, (
        "docs/api.md is out of date: run .venv/bin/python scripts/gen_api_docs.py"
    )
