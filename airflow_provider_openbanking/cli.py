"""``airflow-openbanking``: get, check and drop a customer's consent without copy-pasting tokens.

Subcommands (all take ``--conn-id``, default ``openbanking_default``; ``authorize``, ``status`` and
``revoke`` take ``--consent-id``, default ``default``: the connection's own consent):

- ``authorize`` builds the ``/authorize`` URL from the connection (fresh ``state`` and
  ``correlation_id``, PKCE S256 when asked), prints it and opens a browser where there is one,
  catches the redirect (a one-shot listener when the redirect URI is on loopback, otherwise the
  user pastes the URL), exchanges the code, stores the refresh token in the connection's token
  store (where the next task run reads it) and proves it with one data call.
- ``status`` reports whether the consent is usable (see :mod:`airflow_provider_openbanking.consent`).
- ``revoke`` revokes the consent at the server and forgets the stored token.
- ``providers`` lists the data providers the client is registered with (to pick ``provider_id``).
- ``consents import FILE`` stores many consents at once (JSON Lines or CSV: ``consent_id``,
  ``refresh_token``, optional ``provider_id``, ``scopes``); the whole file is validated first.
- ``consents list`` shows every consent of the connection (state, last refresh, last success).
- ``consents revoke --consent-id K`` revokes one consent at the bank and in the store.

Connections are found wherever Airflow keeps them (secrets backends, ``AIRFLOW_CONN_*``, the
metadata database), as ``airflow connections get`` finds them.

Exit codes: 0 success; 1 failure (one line on stderr, no traceback unless ``--debug``); 2 bad
usage; 3 ``status`` found no usable consent (the customer must authorize); 130 interrupted.
No token is ever printed unless ``authorize --show-token`` is given.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import secrets
import socket
import sys
import threading
import uuid
import webbrowser
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qs, urlsplit, urlunsplit

from airflow_provider_openbanking import __version__

if TYPE_CHECKING:
    from airflow_provider_openbanking.consents.health import ConsentStatus
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

PROG = "airflow-openbanking"
DEFAULT_CONN_ID = "openbanking_default"
DEFAULT_TIMEOUT = 300.0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_CONSENT = 3
EXIT_INTERRUPTED = 130

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class CliError(Exception):
    """An expected failure: printed as one line, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class _Console:
    out: TextIO
    err: TextIO
    inp: TextIO
    hook: OpenBankingHook | None = None
    secrets_seen: set[str] = field(default_factory=set)

    def redact(self, text: str) -> str:
        if self.hook is not None:
            text = self.hook.redact(text)
        for secret in self.secrets_seen:
            if secret:
                text = text.replace(secret, "***")
        return text

    def say(self, text: str = "") -> None:
        print(self.redact(text), file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {self.redact(text)}", file=self.err, flush=True)

    def fail(self, text: str) -> None:
        one_line = " ".join(self.redact(text).split())
        print(f"error: {one_line}", file=self.err, flush=True)


# -- the redirect listener ------------------------------------------------------------------------


def is_loopback_redirect(uri: str) -> bool:
    """True for ``http://127.0.0.1|localhost|[::1][:port]/path`` (RFC 8252 loopback redirect)."""
    try:
        parts = urlsplit(uri)
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS


_DONE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>{title}</h1><p>{body}</p><p>You can close this window and return to the terminal.</p>
</body></html>"""


class CallbackListener:
    """Listen once on the loopback redirect URI and hand back the URL the browser was sent to.

    Port 0 in the redirect URI picks a free port (RFC 8252 section 7.3; the server must accept any
    loopback port, as Flinks' sandbox client does); :attr:`redirect_uri` is then the real one.
    Requests to other paths (``/favicon.ico``) get a 404 and do not count.
    """

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        host = parts.hostname or "127.0.0.1"
        port = parts.port if parts.port is not None else 80
        self.path = parts.path or "/"
        self._received: str | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 15  # a browser's idle pre-connection must not hold a thread for long

            def do_GET(self) -> None:
                target = urlsplit(self.path)
                with listener._lock:  # one callback only, even if two requests race
                    first = (target.path or "/") == listener.path and not listener._claimed
                    listener._claimed = listener._claimed or first
                if not first:
                    self.send_error(404)
                    return
                if "error" in parse_qs(target.query):
                    title, body = "Authorization not granted", "The bank reported an error."
                else:
                    title, body = "Authorization received", "The command line is finishing the setup."
                page = _DONE_PAGE.format(title=html.escape(title), body=html.escape(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(page)
                listener._received = urlunsplit(
                    (parts.scheme, self.headers.get("Host") or parts.netloc, target.path, target.query, "")
                )
                listener._event.set()

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the request log: its request line holds the authorization code."""

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        bind_host = "127.0.0.1" if host == "localhost" else host
        try:
            self._server = Server((bind_host, port), Handler)
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port} for the redirect ({exc.strerror or exc}): free that port, "
                "pass --redirect-uri with another port registered for the client, or --no-listen "
                "to paste the redirect URL instead"
            ) from None
        self.redirect_uri = redirect_uri
        if parts.port == 0:
            netloc = f"[{host}]" if ":" in host else host
            actual_port = self._server.server_address[1]
            self.redirect_uri = urlunsplit((parts.scheme, f"{netloc}:{actual_port}", *parts[2:]))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="oauth-callback",
            daemon=True,
        )
        self._thread.start()

    def wait(self, timeout: float) -> str | None:
        """The callback URL, or ``None`` when nothing arrived within ``timeout`` seconds."""
        self._event.wait(timeout)
        return self._received

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> CallbackListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def browser_available() -> bool:
    """A graphical browser can plausibly be opened (macOS, Windows, or X11/Wayland display)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_browser(url: str) -> bool:
    """Open ``url`` in the user's browser (a module attribute so tests can replace it)."""
    try:
        return bool(webbrowser.open(url, new=1))
    except webbrowser.Error:
        return False


def read_pasted_url(console: _Console) -> str:
    """Prompt for the URL the browser was redirected to; accepts a full URL or its query string."""
    console.say("After approving, your browser is sent to the redirect URI (the page may fail to load).")
    console.say("Paste the full URL from the address bar here and press Enter:")
    while True:
        line = console.inp.readline()
        if not line:
            raise CliError("no redirect URL was pasted (end of input)")
        text = line.strip()
        if text:
            break
    if "://" not in text and "=" in text:
        text = "?" + text.lstrip("?")
    if not {"code", "error", "state"} & set(parse_qs(urlsplit(text).query)):
        raise CliError("that is not the redirect URL: it carries no code, error or state parameter")
    return text


# -- helpers ---------------------------------------------------------------------------------------


def _hook(console: _Console, conn_id: str, consent_id: str | None = None) -> OpenBankingHook:
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    try:
        hook = OpenBankingHook(conn_id, consent_id)
    except ValueError as exc:  # a malformed consent id
        raise CliError(f"--consent-id: {exc}", EXIT_USAGE) from None
    console.hook = hook
    _ = hook.config  # fail now, naming the bad field
    return hook


def _label(hook: OpenBankingHook) -> str:
    """``connection 'c'`` or ``consent 'k' of connection 'c'``."""
    from airflow_provider_openbanking.consents import DEFAULT_CONSENT_ID

    if hook.consent_id == DEFAULT_CONSENT_ID:
        return f"connection {hook.openbanking_conn_id!r}"
    return f"consent {hook.consent_id!r} of connection {hook.openbanking_conn_id!r}"


def _store_label(hook: OpenBankingHook, consent_id: str | None = "") -> str:
    return hook.consent_store.describe(
        hook.openbanking_conn_id, hook.consent_id if consent_id == "" else consent_id
    )


def _store_failure(hook: OpenBankingHook, exc: Exception) -> CliError:
    text = f"{type(exc).__name__}: {exc}"
    if "no such table" in text or ("does not exist" in text and "variable" in text):
        hint = "the metadata database is not initialized: run `airflow db migrate` first"
    else:
        hint = (
            "run this command where Airflow's metadata database is reachable (an Airflow host "
            "with the same AIRFLOW_HOME / AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"
        )
    return CliError(f"cannot use the consent store ({_store_label(hook, None)}): {text}. {hint}")


def _check_store(hook: OpenBankingHook) -> None:
    """Read the consent store once, so an unreachable one fails before the customer approves."""
    try:
        hook.consent_store.load(hook.openbanking_conn_id, hook.consent_id)
    except Exception as exc:
        raise _store_failure(hook, exc) from None


def _parse_scopes_arg(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    from airflow_provider_openbanking.fdx import parse_scopes

    try:
        return parse_scopes(value)
    except ValueError as exc:
        raise CliError(f"--scopes {exc}", EXIT_USAGE) from None


@contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    """Keep INFO logs (token notes) and Airflow's masking chatter out of the user's way.

    Retries and other warnings of the provider still show. Levels are restored afterwards.
    """
    levels = {
        "airflow_provider_openbanking": logging.WARNING,
        # "Skipping masking for a secret as it's too short": about extras such as provider_id
        "airflow.sdk._shared.secrets_masker.secrets_masker": logging.ERROR,
    }
    before = {name: logging.getLogger(name).level for name in levels}
    if not verbose:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


# -- subcommands -----------------------------------------------------------------------------------


def cmd_authorize(args: argparse.Namespace, console: _Console) -> int:
    from airflow_provider_openbanking.consents import InMemoryConsentStore
    from airflow_provider_openbanking.exceptions import ConnectionConfigError, OpenBankingError
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook, clear_token_cache, pkce_pair

    hook = _hook(console, args.conn_id, args.consent_id)
    cfg = hook.config
    redirect_uri = args.redirect_uri or cfg.redirect_uri
    if not redirect_uri:
        raise CliError(
            f"connection {cfg.conn_id!r} has no redirect_uri extra: set it, or pass --redirect-uri "
            "(it must be registered for the client)"
        )
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--redirect-uri must be an absolute http(s) URL, got {redirect_uri!r}", EXIT_USAGE)
    scopes = _parse_scopes_arg(args.scopes) or cfg.scopes
    provider_id = args.provider_id or cfg.provider_id
    use_pkce = cfg.use_pkce if args.pkce is None else args.pkce
    if args.timeout <= 0:
        raise CliError("--timeout must be positive", EXIT_USAGE)

    # Pre-flight: everything that can fail without the customer fails before they click.
    memory = isinstance(hook.consent_store, InMemoryConsentStore)
    if memory and not args.show_token:
        raise CliError(
            f"connection {cfg.conn_id!r} uses consent_store 'memory': the consent would not outlive this "
            "command. Use the default 'variable' store (or 'sql'), or pass --show-token and put the "
            "printed refresh token into the connection's refresh_token extra"
        )
    _check_store(hook)
    try:
        providers = hook.get_providers()
    except ConnectionConfigError:
        raise
    except OpenBankingError as exc:
        console.warn(f"could not list the data providers (continuing): {exc}")
    else:
        known = {str(p.get("id")): p for p in providers}
        if provider_id and provider_id not in known:
            console.warn(f"provider_id {provider_id!r} is not among this client's data providers")
        elif provider_id and str(known[provider_id].get("status", "ACTIVE")).upper() != "ACTIVE":
            console.warn(f"provider {provider_id!r} has status {known[provider_id].get('status')!r}")

    listen = is_loopback_redirect(redirect_uri) and not args.no_listen
    listener = CallbackListener(redirect_uri) if listen else None
    try:
        if listener is not None:
            redirect_uri = listener.redirect_uri
        state = secrets.token_urlsafe(32)
        correlation_id = str(uuid.uuid4())
        verifier, challenge = pkce_pair() if use_pkce else (None, None)
        if verifier:
            console.secrets_seen.add(verifier)
        url = hook.authorization_url(
            state,
            scopes=scopes,
            provider_id=provider_id,
            redirect_uri=redirect_uri,
            correlation_id=correlation_id,
            code_challenge=challenge,
        )
        console.say(f"Authorizing {_label(hook)} (scopes: {' '.join(scopes)}).")
        console.say("Open this URL in a browser, sign in to the bank and approve access:")
        console.say()
        console.say(f"  {url}")
        console.say()
        console.say(f"correlation_id: {correlation_id}" + ("; PKCE S256" if use_pkce else ""))
        if not args.no_browser and browser_available() and open_browser(url):
            console.say("(opened in your browser)")
        if listener is not None:
            console.say(
                f"Waiting up to {args.timeout:g}s for the redirect to {redirect_uri} (Ctrl-C to cancel)..."
            )
            callback = listener.wait(args.timeout)
            if callback is None:
                raise CliError(
                    f"no redirect reached {redirect_uri} within {args.timeout:g}s: was the URL opened and "
                    "approved on this machine? Use --no-listen to paste the redirect URL instead"
                )
        else:
            callback = read_pasted_url(console)
    finally:
        if listener is not None:
            listener.close()

    code = hook.parse_callback(callback, state)
    console.secrets_seen.add(code)
    console.say("Authorization code received; exchanging it...")
    tokens = hook.exchange_code(code, redirect_uri, code_verifier=verifier)
    refresh_token = tokens.get("refresh_token")
    if not refresh_token:
        raise CliError("the token response carries no refresh_token: nothing to store for the next runs")
    console.secrets_seen.add(str(refresh_token))
    granted = str(tokens.get("scope") or "")
    console.say(f"Consent stored for {_label(hook)} in {_store_label(hook)}.")
    if granted:
        console.say(f"Granted scopes: {granted}")
        missing = [s for s in scopes if s not in granted.split()]
        if missing:
            console.warn(f"the customer did not grant {' '.join(missing)}")

    # Prove it the way the next task run will: a new hook, no cached access token, the stored consent.
    clear_token_cache()
    fresh = OpenBankingHook(
        cfg.conn_id, hook.consent_id, consent_store=hook.consent_store if memory else None
    )
    console.hook = fresh
    try:
        granted_set = set(granted.split()) if granted else set(scopes)
        if granted_set & {"ACCOUNT_BASIC"}:
            count = sum(1 for _ in fresh.iter_accounts("lightweight"))
            proof = f"listed {count} account(s)"
        elif "CUSTOMER_PERSONAL" in granted_set:
            fresh.get_customer()
            proof = "read the customer record"
        else:
            fresh.get_access_token()
            proof = "got an access token"
    except OpenBankingError as exc:
        raise CliError(f"the consent was stored, but using it failed: {exc}") from None
    console.say(f"Verified: a fresh hook read the stored consent, refreshed it and {proof}.")
    if cfg.refresh_token and hook.consent_id == "default":
        console.say(
            "Note: the connection still holds an older refresh_token extra; the consent store takes "
            "precedence until a different token is put into the connection."
        )
    if args.show_token:
        # the one place a token is printed (console.say would redact it)
        print(f"refresh_token: {refresh_token}", file=console.out, flush=True)
    return EXIT_OK


#: States in which the consent is dead: its idle clock means nothing any more.
_DEAD = ("no_consent", "revoked", "refresh_rejected", "lapsed")


def _format_status(status: ConsentStatus) -> list[str]:
    lines = [f"Connection:     {status.conn_id}"]
    if status.consent_id != "default":
        lines.append(f"Consent:        {status.consent_id}")
    lines += [f"State:          {status.state}", f"Message:        {status.message}"]
    if status.access_token_ttl is not None:
        lines.append(f"Access token:   valid for {status.access_token_ttl:.0f}s")
    if status.scopes is not None:
        lines.append(f"Scopes:         {' '.join(status.scopes)}")
    elif status.state == "ok":
        lines.append("Scopes:         (not reported by the server)")
    if status.missing_scopes:
        lines.append(f"Missing scopes: {' '.join(status.missing_scopes)}")
    if status.last_refresh_at is not None:
        lines.append(f"Last refresh:   {status.last_refresh_at}")
    if status.days_until_idle_lapse is not None and status.state not in ("error", *_DEAD):
        lines.append(f"Idle lapse:     in {status.days_until_idle_lapse:g} day(s) without use (30-day rule)")
    return lines


def cmd_status(args: argparse.Namespace, console: _Console) -> int:
    from airflow_provider_openbanking.consents.health import consent_status
    from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook

    try:
        hook = OpenBankingHook(args.conn_id, args.consent_id)
    except ValueError as exc:
        raise CliError(f"--consent-id: {exc}", EXIT_USAGE) from None
    console.hook = hook
    status = consent_status(hook, check_scopes=args.check_scopes)
    if args.json:
        console.say(json.dumps(status.as_dict(), indent=2))
    else:
        for line in _format_status(status):
            console.say(line)
    if status.ok:
        return EXIT_OK
    return EXIT_FAILURE if status.state == "error" else EXIT_NO_CONSENT


def _confirm(console: _Console, question: str) -> bool:
    if not (hasattr(console.inp, "isatty") and console.inp.isatty()):
        raise CliError("refusing to revoke without confirmation: pass --yes", EXIT_USAGE)
    print(f"{question} [y/N] ", end="", file=console.out, flush=True)
    return console.inp.readline().strip().lower() in ("y", "yes")


def cmd_revoke(args: argparse.Namespace, console: _Console) -> int:
    from airflow_provider_openbanking.exceptions import ConsentRequiredError

    hook = _hook(console, args.conn_id, args.consent_id)
    _check_store(hook)
    if not args.yes and not _confirm(
        console, f"Revoke the customer's consent ({_label(hook)})? They must authorize again."
    ):
        console.say("Not revoked.")
        return EXIT_OK
    try:
        hook.revoke()
    except ConsentRequiredError as exc:
        stored = hook.stored_consent()
        if exc.status is None and stored is not None and stored.state == "revoked":
            console.say(
                f"The consent was already revoked or lapsed ({stored.updated_at}): nothing to revoke."
            )
            return EXIT_OK
        if exc.status is None:  # no refresh token anywhere
            console.say(f"Nothing to revoke: {_label(hook)} has no consent.")
            return EXIT_OK
        hook.forget_consent()
        console.say(
            "The server no longer accepts this consent (already revoked or lapsed); "
            f"marked it revoked in {_store_label(hook)}."
        )
    else:
        console.say(
            f"Consent revoked at the server and marked revoked (tokens wiped) in {_store_label(hook)}."
        )
    if hook.config.refresh_token and hook.consent_id == "default":
        console.say(
            "Note: the connection itself still holds a refresh_token extra, which is now useless: "
            "remove it, or run `authorize` to replace the consent."
        )
    return EXIT_OK


def cmd_providers(args: argparse.Namespace, console: _Console) -> int:
    hook = _hook(console, args.conn_id)
    providers = hook.get_providers()
    current = hook.config.provider_id
    if args.json:
        console.say(json.dumps(providers, indent=2))
        return EXIT_OK
    if not providers:
        console.say("This client is registered with no data provider.")
        return EXIT_OK
    rows = [(str(p.get("id", "")), str(p.get("name", "")), str(p.get("status", ""))) for p in providers]
    id_w = max(len("ID"), *(len(r[0]) for r in rows))
    name_w = max(len("NAME"), *(len(r[1]) for r in rows))
    console.say(f"  {'ID':<{id_w}}  {'NAME':<{name_w}}  STATUS")
    for pid, name, status in rows:
        mark = "*" if current is not None and pid == current else " "
        console.say(f"{mark} {pid:<{id_w}}  {name:<{name_w}}  {status}")
    if current is not None:
        console.say(f"(* = provider_id of connection {hook.config.conn_id!r})")
    return EXIT_OK


# -- consents: many customers per connection -------------------------------------------------------


def cmd_consents_import(args: argparse.Namespace, console: _Console) -> int:
    from airflow_provider_openbanking.consents.onboarding import (
        ImportFileError,
        read_import_file,
        records_for_import,
    )

    try:  # 1. the whole file, before anything is looked up or written
        rows = read_import_file(args.file, args.format)
    except ImportFileError as exc:
        raise CliError(f"nothing imported: {exc}") from None
    for row in rows:
        console.secrets_seen.add(row.refresh_token)
    hook = _hook(console, args.conn_id)
    cfg = hook.config
    store = hook.consent_store
    try:
        existing = store.load_many(cfg.conn_id, [r.consent_id for r in rows])
    except Exception as exc:
        raise _store_failure(hook, exc) from None
    records = records_for_import(
        cfg.conn_id,
        rows,
        existing,
        connection_refresh_token=cfg.refresh_token,
        default_provider_id=cfg.provider_id,
    )
    replaced = sum(1 for r in rows if r.consent_id in existing)
    if args.dry_run:
        console.say(
            f"{args.file}: {len(rows)} consent(s) valid ({len(rows) - replaced} new, {replaced} would be "
            "replaced); nothing written (--dry-run)."
        )
        return EXIT_OK
    try:  # 2. all or nothing
        store.save_many(records)
    except Exception as exc:
        raise _store_failure(hook, exc) from None
    console.say(
        f"Imported {len(rows)} consent(s) into {_store_label(hook, None)} for connection {cfg.conn_id!r}: "
        f"{len(rows) - replaced} new, {replaced} replaced."
    )
    if not store.encrypted:
        console.warn(
            "no Fernet key is configured ([core] fernet_key): these refresh tokens are stored unencrypted"
        )
    return EXIT_OK


def _consent_rows(hook: OpenBankingHook) -> list[dict[str, Any]]:
    """One public (token-free) dict per consent of the connection."""
    cfg = hook.config
    ids = hook.consent_ids()
    try:
        records = hook.consent_store.load_many(cfg.conn_id, ids)
    except Exception as exc:
        raise _store_failure(hook, exc) from None
    rows = []
    for consent_id in ids:
        record = records.get(consent_id)
        if consent_id == "default":
            record = hook.for_consent("default")._chain(record)
        if record is None:  # the default consent, known only from the connection's extra
            rows.append(
                {
                    "conn_id": cfg.conn_id,
                    "consent_id": consent_id,
                    "state": "active",
                    "source": "connection",
                    "has_refresh_token": True,
                    "last_refresh_at": None,
                    "last_success_at": None,
                    "last_error": None,
                }
            )
            continue
        rows.append({**record.public(), "source": "store"})
    return rows


def cmd_consents_list(args: argparse.Namespace, console: _Console) -> int:
    hook = _hook(console, args.conn_id)
    rows = _consent_rows(hook)
    if args.json:
        console.say(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        console.say(
            f"Connection {hook.config.conn_id!r} has no consent: `{PROG} consents import --conn-id "
            f"{hook.config.conn_id} FILE` or `{PROG} authorize`."
        )
        return EXIT_OK
    cols = ("consent_id", "state", "last_refresh_at", "last_success_at", "last_error")
    table = [[str(r.get(c) or "-") for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    console.say("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for t in table:
        console.say("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
    states: dict[str, int] = {}
    for r in rows:
        states[str(r["state"])] = states.get(str(r["state"]), 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    console.say(f"{len(rows)} consent(s) of connection {hook.config.conn_id!r}: {summary}")
    return EXIT_OK


def cmd_consents_revoke(args: argparse.Namespace, console: _Console) -> int:
    args.yes = True  # the consent is named explicitly: made for scripts, no prompt
    return cmd_revoke(args, console)


# -- parser and entry point ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--conn-id",
        default=DEFAULT_CONN_ID,
        help=f"id of the openbanking connection (default: {DEFAULT_CONN_ID})",
    )
    common.add_argument("--verbose", "-v", action="store_true", help="show the provider's INFO logs")
    common.add_argument("--debug", action="store_true", help="show a traceback on unexpected errors")
    consent = argparse.ArgumentParser(add_help=False)
    consent.add_argument(
        "--consent-id",
        default="default",
        help="which consent of the connection (default: 'default', the connection's own)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage the customer consent behind an Airflow openbanking (Flinks / FDX) connection.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage, 3 no usable consent (status), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    auth = sub.add_parser(
        "authorize",
        parents=[common, consent],
        help="get the customer's consent in a browser and store it for the DAGs",
        description="Send the customer through /authorize, catch the redirect, exchange the code "
        "and store the refresh token where the hook reads it on the next run.",
    )
    auth.add_argument("--redirect-uri", help="override the connection's redirect_uri (must be registered)")
    auth.add_argument("--scopes", help="space- or comma-separated scopes (default: the connection's)")
    auth.add_argument("--provider-id", help="data provider (default: the connection's provider_id)")
    auth.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the loopback redirect (default: {DEFAULT_TIMEOUT:g})",
    )
    auth.add_argument("--no-browser", action="store_true", help="only print the URL")
    auth.add_argument(
        "--no-listen",
        action="store_true",
        help="do not listen on a loopback redirect URI; paste the redirect URL instead "
        "(when the browser runs on another machine)",
    )
    auth.add_argument(
        "--pkce",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send a PKCE S256 challenge (default: the connection's use_pkce)",
    )
    auth.add_argument(
        "--show-token",
        action="store_true",
        help="print the new refresh token (otherwise no token is ever printed)",
    )
    auth.set_defaults(func=cmd_authorize)

    stat = sub.add_parser(
        "status",
        parents=[common, consent],
        help="is there a usable consent? token lifetime, scopes, idle lapse",
        description="Check the consent as a task would (refresh grant, one data call). Note: a refresh "
        "counts as a use, so this restarts Flinks' 30-day idle clock. Exit code 3 when the customer "
        "must authorize.",
    )
    stat.add_argument(
        "--check-scopes",
        action="store_true",
        help="also check that every scope of the connection was granted",
    )
    stat.add_argument("--json", action="store_true", help="print the status as JSON")
    stat.set_defaults(func=cmd_status)

    rev = sub.add_parser(
        "revoke",
        parents=[common, consent],
        help="revoke the consent at the server and forget the stored token",
    )
    rev.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rev.set_defaults(func=cmd_revoke)

    prov = sub.add_parser(
        "providers",
        parents=[common],
        help="list the data providers this client is registered with",
    )
    prov.add_argument("--json", action="store_true", help="print the providers as JSON")
    prov.set_defaults(func=cmd_providers)

    cons = sub.add_parser(
        "consents",
        help="many consents per connection: import, list, revoke",
        description="Manage the consents of one connection (one Data Recipient client, many customers).",
    )
    csub = cons.add_subparsers(dest="consents_command", required=True, metavar="ACTION")
    imp = csub.add_parser(
        "import",
        parents=[common],
        help="store consents from a JSON Lines or CSV file (validated first; all or nothing)",
        description="Columns: consent_id, refresh_token (required), provider_id, scopes. The whole file "
        "is validated before anything is written; a bad line aborts with its number. Re-importing a "
        "consent replaces its token. No token is ever printed.",
    )
    imp.add_argument("file", help="path of the .jsonl or .csv file")
    imp.add_argument("--format", choices=("jsonl", "csv"), help="default: from the file name or its content")
    imp.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    imp.set_defaults(func=cmd_consents_import)
    lst = csub.add_parser(
        "list",
        parents=[common],
        help="every consent of the connection: state, last refresh, last success (never a token)",
    )
    lst.add_argument("--json", action="store_true", help="print the consents as JSON")
    lst.set_defaults(func=cmd_consents_list)
    crev = csub.add_parser(
        "revoke",
        parents=[common],
        help="revoke one consent at the bank and in the store",
    )
    crev.add_argument("--consent-id", required=True, help="the consent to revoke")
    crev.set_defaults(func=cmd_consents_revoke)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    console = _Console(out=stdout or sys.stdout, err=stderr or sys.stderr, inp=stdin or sys.stdin)
    parser = build_parser()
    try:
        with redirect_stdout(console.out), redirect_stderr(console.err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace, _Console], int] = args.func

    from airflow.exceptions import AirflowNotFoundException

    from airflow_provider_openbanking.exceptions import AuthorizationCallbackError, OpenBankingError

    with _quiet_logs(args.verbose):
        try:
            return func(args, console)
        except CliError as exc:
            console.fail(str(exc))
            return exc.exit_code
        except AuthorizationCallbackError as exc:
            console.fail(str(exc))
            return EXIT_FAILURE
        except OpenBankingError as exc:
            console.fail(str(exc))
            return EXIT_FAILURE
        except AirflowNotFoundException as exc:
            if args.conn_id not in str(exc):  # another connection (the SQL store's, a key's)
                console.fail(str(exc))
                return EXIT_FAILURE
            console.fail(
                f"connection {args.conn_id!r} is not defined: create it (conn type 'openbanking') in the "
                f"UI, with `airflow connections add`, or as AIRFLOW_CONN_{args.conn_id.upper()}"
            )
            return EXIT_FAILURE
        except KeyboardInterrupt:
            console.fail("interrupted")
            return EXIT_INTERRUPTED
        except Exception as exc:
            if args.debug:
                raise
            console.fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
            return EXIT_FAILURE


__all__ = ["CallbackListener", "CliError", "build_parser", "consent_status_lines", "main"]


def consent_status_lines(status: ConsentStatus) -> list[str]:
    """The human-readable lines ``status`` prints (for DAGs that want the same wording)."""
    return _format_status(status)
