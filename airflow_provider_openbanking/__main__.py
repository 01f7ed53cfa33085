"""``python -m airflow_provider_openbanking`` and the ``airflow-openbanking`` console script."""

from __future__ import annotations

import sys


def main() -> int:
    """Run :func:`airflow_provider_openbanking.cli.main` on ``sys.argv``; returns the exit code."""
    from airflow_provider_openbanking.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
