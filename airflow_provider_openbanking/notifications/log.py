"""``LogNotifier``: an alert that only writes a log line.

The example DAGs use it as the stand-in for a real alert transport: in production, pass
``SlackNotifier`` (``apache-airflow-providers-slack``), ``SmtpNotifier``
(``apache-airflow-providers-smtp``) or any other ``BaseNotifier`` to ``on_failure_callback``
instead -- they take the same templated message. This module sends nothing anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Names the DAG, the run and the task, then the exception text (for the consent health DAG: one
#: line per unhealthy consent).
DEFAULT_MESSAGE = "Airflow alert: {{ dag.dag_id }} / {{ run_id }} / {{ ti.task_id }} failed:\n{{ exception }}"


class LogNotifier(BaseNotifier):
    """Write the rendered ``message`` to the ``airflow_provider_openbanking.alerts`` logger.

    :param message: a Jinja template rendered with the callback's context (``exception`` is there
        in ``on_failure_callback``).
    :param level: the log level (default ``ERROR``).
    """

    template_fields: Sequence[str] = ("message",)

    def __init__(self, message: str = DEFAULT_MESSAGE, *, level: int = logging.ERROR) -> None:
        super().__init__()
        self.message = message
        self.level = level

    def notify(self, context: Context) -> None:
        logging.getLogger("airflow_provider_openbanking.alerts").log(self.level, "%s", self.message)


__all__ = ["DEFAULT_MESSAGE", "LogNotifier"]
