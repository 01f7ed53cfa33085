"""``OpenBankingTokenTrigger``: wait in the triggerer until a customer access token can be had.

The trigger polls :meth:`OpenBankingHook.get_access_token` in a worker thread (``sync_to_async``:
the hook is synchronous and reads the connection, which must not happen on the event loop), with a
new hook every time so that a new consent put into the connection is picked up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from airflow_provider_openbanking.exceptions import ConsentRequiredError, TransientApiError


@dataclass(frozen=True)
class TokenCheck:
    """Result of one attempt: ``ok`` with the token's ``ttl``, or the ``reason`` to keep waiting."""

    ok: bool
    ttl: float | None = None
    reason: str | None = None
    short_lived: bool = False
    """The server's tokens live less than ``min_ttl``: a freshly minted one was accepted."""


def check_access_token(openbanking_conn_id: str, min_ttl: float) -> TokenCheck:
    """Try once to get a customer access token with ``min_ttl`` seconds left.

    A missing or revoked consent (:class:`ConsentRequiredError`) and an unavailable API
    (:class:`TransientApiError`, once the hook's retries are spent) are reasons to wait; any other
    error (a bad connection, wrong client credentials) is raised. When the server issues tokens
    that live less than ``min_ttl``, the freshly minted token counts as good enough (waiting could
    never do better).
    """
    # Imported here so that parsing a DAG that uses the sensor does not import requests & co.
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    hook = OpenBankingHook(openbanking_conn_id)
    try:
        hook.get_access_token(min_ttl)
        ttl = hook.access_token_ttl()
    except ConsentRequiredError as exc:
        return TokenCheck(False, reason=f"no customer consent: {exc}")
    except TransientApiError as exc:
        return TokenCheck(False, reason=f"the API is unavailable: {exc}")
    finally:
        hook.close()
    return TokenCheck(True, ttl=ttl, short_lived=ttl < min_ttl)


class OpenBankingTokenTrigger(BaseTrigger):
    """Fire once a customer access token with ``min_ttl`` seconds left can be had.

    Events: ``{"status": "success", "ttl": seconds, "short_lived": bool}``;
    ``{"status": "timeout", "message": …}`` once ``timeout_at`` (epoch seconds) passes;
    ``{"status": "error", "message": …}`` on an error waiting cannot fix.

    :param openbanking_conn_id: the ``openbanking`` connection.
    :param min_ttl: seconds the access token must still be valid for.
    :param poll_interval: seconds between attempts.
    :param timeout_at: give up at this time (epoch seconds); None waits forever.
    """

    def __init__(
        self,
        openbanking_conn_id: str,
        min_ttl: float = 60.0,
        poll_interval: float = 60.0,
        timeout_at: float | None = None,
    ) -> None:
        super().__init__()
        self.openbanking_conn_id = openbanking_conn_id
        self.min_ttl = float(min_ttl)
        self.poll_interval = float(poll_interval)
        self.timeout_at = None if timeout_at is None else float(timeout_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "openbanking_conn_id": self.openbanking_conn_id,
                "min_ttl": self.min_ttl,
                "poll_interval": self.poll_interval,
                "timeout_at": self.timeout_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        check = sync_to_async(check_access_token, thread_sensitive=False)
        attempts = 0
        while True:
            attempts += 1
            try:
                result = await check(self.openbanking_conn_id, self.min_ttl)
            except Exception as exc:
                yield TriggerEvent(
                    {"status": "error", "message": f"{type(exc).__name__}: {exc}", "attempts": attempts}
                )
                return
            if result.ok:
                yield TriggerEvent(
                    {
                        "status": "success",
                        "ttl": result.ttl,
                        "short_lived": result.short_lived,
                        "attempts": attempts,
                    }
                )
                return
            self.log.info(
                "Connection %r: %s; checking again in %.0f s",
                self.openbanking_conn_id,
                result.reason,
                self.poll_interval,
            )
            delay = self.poll_interval
            if self.timeout_at is not None:
                remaining = self.timeout_at - time.time()
                if remaining <= 0:
                    yield TriggerEvent({"status": "timeout", "message": result.reason, "attempts": attempts})
                    return
                delay = min(delay, remaining)
            await asyncio.sleep(delay)


__all__ = ["OpenBankingTokenTrigger", "TokenCheck", "check_access_token"]
