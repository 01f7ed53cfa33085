"""Command line and server runner: ``python -m airflow_provider_openbanking.sandbox --port 8765``."""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import sys
from collections.abc import Sequence
from typing import Any

from .data import Bank
from .state import CONSENT_MODES, Knobs, Sandbox, parse_now


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_openbanking.sandbox",
        description="Local stand-in for the Flinks Open Banking API (OAuth + FDX 5).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--customers", type=int, default=3)
    p.add_argument("--accounts-per-customer", type=int, default=6)
    p.add_argument("--transactions-per-account", type=int, default=400)
    p.add_argument("--days", type=int, default=90, help="length of the history span")
    p.add_argument(
        "--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 20), help="last day of the span"
    )
    p.add_argument("--now", default=None, help="bank clock (ISO datetime); default end of the span")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--access-token-ttl", type=float, default=300)
    p.add_argument("--code-ttl", type=float, default=60)
    p.add_argument("--rotate-refresh-tokens", action="store_true")
    p.add_argument("--refresh-grace-seconds", type=float, default=10)
    p.add_argument("--refresh-idle-days", type=float, default=30)
    p.add_argument("--consent-mode", choices=CONSENT_MODES, default="approve")
    p.add_argument("--empty-as-1107", action="store_true")
    p.add_argument("--latency-ms", type=float, default=0)
    p.add_argument(
        "--strict-fdx53",
        action="store_true",
        help="act as a strict FDX 5.3 server: accountIds and dates ignored, holdings only on /accounts/{id}",
    )
    p.add_argument(
        "--rate-limit-rps", type=float, default=0, help="per-client requests per second (0 = no limit)"
    )
    p.add_argument("--rate-limit-burst", type=int, default=0, help="bucket size (0 = one second's worth)")
    p.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


def build_sandbox(args: argparse.Namespace) -> Sandbox:
    bank = Bank(
        seed=args.seed,
        customers=args.customers,
        accounts_per_customer=args.accounts_per_customer,
        transactions_per_account=args.transactions_per_account,
        days=args.days,
        end_date=args.end_date,
    )
    if not 1 <= args.page_size <= 1000:
        raise SystemExit("--page-size must be 1..1000")
    startup = Knobs(
        access_token_ttl=args.access_token_ttl,
        rotate_refresh_tokens=args.rotate_refresh_tokens,
        refresh_grace_seconds=args.refresh_grace_seconds,
        refresh_idle_days=args.refresh_idle_days,
        code_ttl=args.code_ttl,
        consent_mode=args.consent_mode,
        latency_ms=args.latency_ms,
        page_size=args.page_size,
        now=parse_now(args.now) if args.now else bank.default_now,
        empty_as_1107=args.empty_as_1107,
        transactions_per_account=args.transactions_per_account,
        rate_limit_rps=args.rate_limit_rps,
        rate_limit_burst=args.rate_limit_burst,
        strict_fdx53=args.strict_fdx53,
    )
    if args.rate_limit_rps < 0 or args.rate_limit_burst < 0:
        raise SystemExit("--rate-limit-rps and --rate-limit-burst must be >= 0")
    return Sandbox(bank, startup)


def serve(app: Any, host: str, port: int, *, log_level: str = "warning", access_log: bool = False) -> None:
    """Bind (port 0 = any free port), then run uvicorn; announce the URL once accepting connections."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{bound}"

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                print(f"Sandbox listening on {url}", flush=True)

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    _Server(config).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    from .app import create_app

    args = build_parser().parse_args(argv)
    try:
        sandbox = build_sandbox(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(create_app(sandbox), args.host, args.port, log_level=args.log_level, access_log=args.access_log)
    return 0
