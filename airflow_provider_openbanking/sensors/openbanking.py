"""``OpenBankingTokenSensor``: wait until the customer's consent yields an access token."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider_openbanking.triggers.openbanking import (
    OpenBankingTokenTrigger,
    TokenCheck,
    check_access_token,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Extra time given to the triggerer's own deferral timeout, so the trigger's clearer timeout
#: event normally arrives first.
_DEFER_MARGIN = dt.timedelta(seconds=60)


def _default_deferrable() -> bool:
    try:
        from airflow.configuration import conf

        return conf.getboolean("operators", "default_deferrable", fallback=False)
    except Exception:  # pragma: no cover
        return False


class OpenBankingTokenSensor(BaseSensorOperator):
    """Wait until a customer access token with at least ``min_ttl`` seconds left can be had.

    While the consent is missing or revoked (or the API unreachable) the sensor keeps waiting -- a
    DAG can wait for the customer to re-authorize -- until ``timeout``, then fails with a message
    saying so (or is skipped with ``soft_fail=True``). Errors that waiting cannot fix (a malformed
    connection, rejected client credentials) fail at once.

    If the server issues access tokens that live less than ``min_ttl``, a freshly minted token is
    accepted (waiting would never produce a longer one) and a warning is logged.

    Every check builds a new hook, so a new refresh token stored in the connection is picked up
    while the sensor waits. The XCom value is ``{"conn_id": …, "ttl": seconds}`` (never a token).

    :param openbanking_conn_id: the ``openbanking`` connection. (templated)
    :param min_ttl: seconds the access token must still be valid for (default 60).
    :param deferrable: wait in the triggerer (:class:`OpenBankingTokenTrigger`) instead of a worker
        slot; default ``[operators] default_deferrable``. ``poke_interval`` is the trigger's polling
        interval and ``timeout`` still applies.
    """

    template_fields: Sequence[str] = ("openbanking_conn_id",)
    ui_color = "#d6ecf3"

    def __init__(
        self,
        *,
        openbanking_conn_id: str = "openbanking_default",
        min_ttl: float = 60,
        deferrable: bool = _default_deferrable(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if min_ttl < 0:
            raise ValueError(f"min_ttl must not be negative, got {min_ttl}")
        self.openbanking_conn_id = openbanking_conn_id
        self.min_ttl = min_ttl
        self.deferrable = deferrable
        self._last_reason: str | None = None

    # -- poke / reschedule -----------------------------------------------------------------------

    def _result(self, check: TokenCheck) -> dict[str, Any]:
        ttl = round(check.ttl or 0.0, 1)
        if check.short_lived:
            self.log.warning(
                "The server's access tokens live %.0f s, less than min_ttl=%s s: accepting a freshly "
                "minted token",
                ttl,
                self.min_ttl,
            )
        self.log.info("Connection %r: customer access token valid for %.0f s", self.openbanking_conn_id, ttl)
        return {"conn_id": self.openbanking_conn_id, "ttl": ttl}

    def _check(self) -> TokenCheck:
        """One check; a missing or malformed connection fails at once (no retry can fix it)."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

        from airflow_provider_openbanking.exceptions import ConnectionConfigError

        try:
            return check_access_token(self.openbanking_conn_id, self.min_ttl)
        except ConnectionConfigError as exc:  # the hook's unknown-connection sentence included
            raise AirflowFailException(str(exc)) from None
        except AirflowNotFoundException as exc:
            raise AirflowFailException(
                f"Connection {self.openbanking_conn_id!r} does not exist: create it (see README) -- {exc}"
            ) from None

    def poke(self, context: Context) -> bool | PokeReturnValue:
        check = self._check()
        if check.ok:
            return PokeReturnValue(is_done=True, xcom_value=self._result(check))
        self._last_reason = check.reason
        self.log.info("Connection %r: waiting (%s)", self.openbanking_conn_id, check.reason)
        return False

    def _timeout_message(self, reason: str | None = None) -> str:
        why = reason or self._last_reason or "no customer access token could be had"
        return (
            f"Timed out after {self.timeout:.0f} s waiting for a customer access token on connection "
            f"{self.openbanking_conn_id!r}: {why}. The customer must re-authorize (run "
            f"`airflow-openbanking authorize --conn-id {self.openbanking_conn_id}` or store a new "
            f"refresh token in the connection)."
        )

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            return self._execute_deferrable(context)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(self._timeout_message()) from exc
        except AirflowSkipException as exc:
            if self.soft_fail and str(exc).startswith("Sensor has timed out"):
                raise AirflowSkipException(self._timeout_message()) from exc
            raise

    # -- deferrable ------------------------------------------------------------------------------

    def _execute_deferrable(self, context: Context) -> Any:
        check = self._check()
        if check.ok:
            return self._result(check)
        self.log.info(
            "Connection %r: %s; deferring to the triggerer (checking every %.0f s for up to %.0f s)",
            self.openbanking_conn_id,
            check.reason,
            self.poke_interval,
            self.timeout,
        )
        self.defer(
            trigger=OpenBankingTokenTrigger(
                openbanking_conn_id=self.openbanking_conn_id,
                min_ttl=self.min_ttl,
                poll_interval=self.poke_interval,
                timeout_at=time.time() + self.timeout,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout) + _DEFER_MARGIN,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Handle the trigger's event: success returns the XCom value, timeout/error fail."""
        event = event or {}
        status = event.get("status")
        if status == "success":
            ttl = float(event.get("ttl") or 0.0)
            return self._result(TokenCheck(True, ttl=ttl, short_lived=bool(event.get("short_lived"))))
        if status == "timeout":
            message = self._timeout_message(event.get("message"))
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        raise AirflowException(
            f"Waiting for a customer access token on connection {self.openbanking_conn_id!r} failed: "
            f"{event.get('message') or event!r}"
        )


__all__ = ["OpenBankingTokenSensor"]
