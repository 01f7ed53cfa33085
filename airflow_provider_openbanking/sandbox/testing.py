"""Run the sandbox in a subprocess and drive its admin API, for tests, the demo and benchmarks.

with SandboxServer(customers=2, transactions_per_account=1000) as sb:
    token = sb.grant_consent("cust-0001")
    sb.inject({"kind": "status", "status": 503, "path": "/transactions"})
    ...
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

_READY = "Sandbox listening on "
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    return [flag, str(value)]


class SandboxServer:
    """A sandbox server process on ``host:port`` (port 0 = a free port). ``options`` become CLI flags:
    ``transactions_per_account=10`` -> ``--transactions-per-account 10``, ``True`` -> a bare flag."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.host = host
        self.port = port
        self.options = options
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=400)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # never send loopback calls through a proxy

    # ---- process ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def output(self) -> str:
        """The last lines the server printed (stdout and stderr)."""
        return "".join(self._output)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "airflow_provider_openbanking.sandbox", "--host", self.host]
        cmd += ["--port", str(self.port)]
        for name, value in self.options.items():
            cmd += _flag(name, value)
        return cmd

    def start(self, timeout: float = 30.0) -> SandboxServer:
        if self.process is not None:
            raise RuntimeError("sandbox already started")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._ready.clear()
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
        )
        self._reader = threading.Thread(target=self._read_output, name="sandbox-output", daemon=True)
        self._reader.start()
        ended = self._ready.wait(timeout)
        if not self.url:
            code = self.process.poll()
            if ended and code is None:  # output closed: the process is exiting
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self.process.wait(timeout=5)
            self.stop()
            state = f"exited with code {code}" if code is not None else f"not ready after {timeout:.0f} s"
            raise RuntimeError(f"sandbox {state}; command {' '.join(self.command())}\n{self.output}")
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._output.append(line)
            if not self._ready.is_set() and line.startswith(_READY):
                self.url = line[len(_READY) :].strip()
                self._ready.set()
        self._ready.set()  # process ended: unblock start()

    def stop(self) -> None:
        proc, self.process = self.process, None
        self._http.close()
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- admin API --------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.url:
            raise RuntimeError("sandbox is not running")
        resp = self._http.request(method, f"{self.url}{path}", timeout=60, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Merge-update run-time knobs (``now`` may be a datetime/date); returns the whole config."""
        body = {k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in knobs.items()}
        result: dict[str, Any] = self._call("POST", "/_admin/config", json=body)
        return result

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_admin/config")
        return result

    def inject(self, *faults: dict[str, Any]) -> None:
        self._call("POST", "/_admin/faults", json=list(faults))

    def clear_faults(self) -> None:
        self._call("DELETE", "/_admin/faults")

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_admin/counters")
        return result

    def reset(self) -> None:
        self._call("POST", "/_admin/reset")

    def issued_secrets(self) -> dict[str, list[str]]:
        """Every access token, refresh token and authorization code issued since the last reset
        (``{"access_tokens": [...], "refresh_tokens": [...], "codes": [...]}``)."""
        result: dict[str, list[str]] = self._call("GET", "/_admin/issued")
        return result

    def expire_access_tokens(self, older_than: float | None = None, customer_id: str | None = None) -> int:
        """Make every access token issued so far expired -- only those issued ``older_than``
        seconds ago or more, of ``customer_id``'s consents, when given: the next data call with
        one answers 401, not 602."""
        params: dict[str, Any] = {}
        if older_than:
            params["older_than"] = older_than
        if customer_id:
            params["customer_id"] = customer_id
        return int(self._call("POST", "/_admin/tokens/expire", params=params or None)["expired"])

    def grant_consent(
        self,
        customer_id: str | None = None,
        scopes: Any = None,
        client_id: str = "demo-client",
        *,
        idle_days: float | None = None,
    ) -> str:
        """Create a consent without a browser; returns its refresh token.

        ``idle_days``: the consent was last used that many days ago on the bank clock (more than
        ``refresh_idle_days`` = already lapsed: its first refresh answers ``invalid_grant``).
        """
        body: dict[str, Any] = {"client_id": client_id}
        if customer_id is not None:
            body["customer_id"] = customer_id
        if scopes is not None:
            body["scopes"] = scopes
        if idle_days is not None:
            body["idle_days"] = idle_days
        return str(self._call("POST", "/_admin/consents", json=body)["refresh_token"])

    def grant_consents(
        self, count: int | None = None, scopes: Any = None, *, client_id: str | None = None
    ) -> list[dict[str, Any]]:
        """A consent for each of the first ``count`` customers (None: all of them) in one call.

        Returns ``[{"consent_id": <customer id>, "customer_id": ..., "refresh_token": ...}, ...]``
        in customer order: what a consent store needs to hold 10,000 consents without a browser.
        """
        body: dict[str, Any] = {"count": count}
        if scopes is not None:
            body["scopes"] = scopes
        if client_id is not None:
            body["client_id"] = client_id
        result: list[dict[str, Any]] = self._call("POST", "/_admin/consents/bulk", json=body)["consents"]
        return result

    def revoke_consent(
        self, *, customer_id: str | None = None, refresh_token: str | None = None, at_bank: bool = False
    ) -> None:
        """Revoke consents (refresh grants then answer ``invalid_grant``). ``at_bank=True``: the
        customer withdrew access at the bank instead -- refresh grants still work, data calls get 602."""
        body: dict[str, Any] = {"customer_id": customer_id, "refresh_token": refresh_token}
        if at_bank:
            body["at_bank"] = True
        self._call("POST", "/_admin/consents/revoke", json=body)

    def consents(self) -> list[dict[str, Any]]:
        """Every consent (no tokens): customer, scopes, ``revoked``, ``bank_revoked``, ``last_used``."""
        result: list[dict[str, Any]] = self._call("GET", "/_admin/consents")
        return result

    def register_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        body = {"client_id": client_id, "client_secret": client_secret, "redirect_uris": list(redirect_uris)}
        self._call("POST", "/_admin/clients", json=body)

    def customers(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Customers with their account ids, in order (``offset``/``limit``: a slice of them)."""
        params: dict[str, int] = {"offset": offset} if offset else {}
        if limit is not None:
            params["limit"] = limit
        result: list[dict[str, Any]] = self._call("GET", "/_admin/customers", params=params or None)
        return result

    def truth_accounts(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        params = {"customer_id": customer_id} if customer_id else None
        result: list[dict[str, Any]] = self._call("GET", "/_admin/truth/accounts", params=params)
        return result

    def truth_transactions(
        self, account_id: str, start: str | dt.date | None = None, end: str | dt.date | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {"account_id": account_id}
        if start is not None:
            params["start"] = start.isoformat() if isinstance(start, dt.date) else start
        if end is not None:
            params["end"] = end.isoformat() if isinstance(end, dt.date) else end
        result: list[dict[str, Any]] = self._call("GET", "/_admin/truth/transactions", params=params)
        return result
