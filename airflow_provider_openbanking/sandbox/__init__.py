"""Local stand-in for the Flinks Open Banking API (OAuth 2 + FDX 5), for tests, demos and benchmarks.

Run it with ``python -m airflow_provider_openbanking.sandbox --port 8765``; drive it from Python
with :class:`airflow_provider_openbanking.sandbox.testing.SandboxServer`. See ``docs/sandbox.md``.
"""

from __future__ import annotations

__all__ = ["SandboxServer"]


def __getattr__(name: str) -> object:
    if name == "SandboxServer":
        from .testing import SandboxServer

        return SandboxServer
    raise AttributeError(name)
