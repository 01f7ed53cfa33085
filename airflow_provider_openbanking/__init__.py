"""Apache Airflow provider for the Flinks Open Banking API (FDX 5 Data Recipient).

Importing this package is deliberately cheap: it imports nothing from Airflow, requests or the
sandbox, so a DAG file can ``import airflow_provider_openbanking`` at parse time for free. The
hook, operators, sensor and trigger live in their own modules and are imported where used.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
