"""``python -m airflow_provider_openbanking.sandbox``: run the sandbox server."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
