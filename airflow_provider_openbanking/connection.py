"""The ``openbanking`` connection, parsed and checked once.

Every field is validated at first use, and a bad one raises :class:`ConnectionConfigError` naming
the field and the connection id, instead of a ``KeyError`` or a confusing HTTP error later.
Custom fields are read from the extras with or without the legacy ``extra__openbanking__`` prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_openbanking.exceptions import ConnectionConfigError
from airflow_provider_openbanking.fdx import ALL_SCOPES, parse_scopes
from airflow_provider_openbanking.pagination import DEFAULT_MAX_PAGES

CONN_TYPE = "openbanking"
_PREFIX = f"extra__{CONN_TYPE}__"


@dataclass(frozen=True)
class OpenBankingConfig:
    """Checked settings of one ``openbanking`` connection (secrets included: never log it whole)."""

    conn_id: str
    base_url: str
    client_id: str
    client_secret: str
    refresh_token: str | None
    provider_id: str | None
    scopes: tuple[str, ...]
    redirect_uri: str | None
    token_path: str
    fdx_base_path: str
    timeout: float
    page_size: int | None
    verify: bool | str
    token_request_format: str
    token_store: str
    max_attempts: int
    max_elapsed: float
    retry_initial_wait: float
    use_pkce: bool
    rotation_wait: float
    """Seconds to wait for another worker's rotated refresh token before declaring it dead."""
    max_pages: int = DEFAULT_MAX_PAGES
    """Pages one pagination may walk before it ends with an error (a server that never stops)."""
    max_response_bytes: int = 64 * 2**20
    """Largest JSON response body accepted (an oversized page is refused with a clear error)."""
    max_requests_per_second: float | None = None
    """Client-side rate limit, shared by every thread of the process that uses this client."""
    consent_store_conn_id: str | None = None
    """A common-sql connection holding the consent table (implies ``consent_store: sql``)."""
    consent_store_fernet_conn_id: str | None = None
    """A connection whose password is the Fernet key of the SQL consent store (default: ``[core] fernet_key``)."""

    @property
    def consent_store(self) -> str:
        """Which consent store: ``variable``, ``sql``, ``memory`` or a dotted class path."""
        return self.token_store

    def __repr__(self) -> str:
        return f"OpenBankingConfig(conn_id={self.conn_id!r}, base_url={self.base_url!r}, client_id={self.client_id!r})"


def _extra(extras: dict[str, Any], name: str) -> Any:
    value = extras.get(name)
    if value is None:
        value = extras.get(_PREFIX + name)
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


def _as_bool(conn_id: str, field: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConnectionConfigError(conn_id, field, f"must be true or false, got {value!r}")


def _as_number(
    conn_id: str, field: str, value: Any, default: float, *, integer: bool = False, allow_zero: bool = False
) -> float:
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise ConnectionConfigError(conn_id, field, f"must be {kind}, got {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ConnectionConfigError(conn_id, field, f"must be positive, got {value!r}")
    return number


def _as_path(conn_id: str, field: str, value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConnectionConfigError(conn_id, field, f"must be a path starting with '/', got {value!r}")
    return value.rstrip("/") or "/"


def _optional_str(conn_id: str, field: str, extras: dict[str, Any]) -> str | None:
    value = _extra(extras, field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConnectionConfigError(conn_id, field, "must be a connection id (a string)")
    return value.strip()


def _store_kind(extras: dict[str, Any]) -> str:
    """``consent_store`` (``token_store`` is the 0.x name); ``sql`` when only the SQL conn is given."""
    kind = _extra(extras, "consent_store") or _extra(extras, "token_store")
    if kind is None:
        return "sql" if _extra(extras, "consent_store_conn_id") else "variable"
    return str(kind).strip()


def parse_connection(conn: Any) -> OpenBankingConfig:
    """Build an :class:`OpenBankingConfig` from an Airflow ``Connection``."""
    conn_id = str(conn.conn_id)
    raw_extra = conn.extra
    if isinstance(raw_extra, dict):
        extras = raw_extra
    elif raw_extra:
        # Not ``extra_dejson``: it logs a traceback and returns {} for malformed JSON, which would
        # turn a typo into a consent that looks missing.
        try:
            extras = json.loads(raw_extra)
        except (TypeError, ValueError):
            raise ConnectionConfigError(conn_id, "extra", "is not valid JSON") from None
    else:
        extras = {}
    if not isinstance(extras, dict):
        raise ConnectionConfigError(conn_id, "extra", "must be a JSON object")

    host = (conn.host or "").strip()
    if not host:
        raise ConnectionConfigError(
            conn_id, "host", "is empty: set it to the API base URL, e.g. https://ob.flinksapp.com"
        )
    if "://" not in host:
        schema = (conn.schema or "https").strip() or "https"
        host = f"{schema}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConnectionConfigError(
            conn_id, "host", f"must be an http(s) URL such as https://ob.flinksapp.com, got {host!r}"
        )
    base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    client_id = (conn.login or "").strip()
    if not client_id:
        raise ConnectionConfigError(conn_id, "login", "(Client ID) is empty")
    client_secret = conn.password or ""
    if not client_secret:
        raise ConnectionConfigError(conn_id, "password", "(Client secret) is empty")

    try:
        scopes = parse_scopes(_extra(extras, "scopes"))
    except ValueError as exc:
        raise ConnectionConfigError(conn_id, "scopes", str(exc)) from None

    refresh_token = _extra(extras, "refresh_token")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise ConnectionConfigError(conn_id, "refresh_token", "must be a string")

    redirect_uri = _extra(extras, "redirect_uri")
    if redirect_uri is not None:
        rparts = urlsplit(str(redirect_uri))
        if rparts.scheme not in ("http", "https") or not rparts.netloc:
            raise ConnectionConfigError(
                conn_id, "redirect_uri", f"must be an absolute http(s) URL, got {redirect_uri!r}"
            )

    page_size = _extra(extras, "page_size")
    if page_size is not None:
        page_size = int(_as_number(conn_id, "page_size", page_size, 0, integer=True))

    verify_raw = _extra(extras, "verify")
    verify: bool | str
    if isinstance(verify_raw, str) and verify_raw.strip().lower() not in (
        "true",
        "false",
        "1",
        "0",
        "yes",
        "no",
    ):
        verify = verify_raw  # a CA bundle path
    else:
        verify = _as_bool(conn_id, "verify", verify_raw, True)

    fmt = str(_extra(extras, "token_request_format") or "json").lower()
    if fmt not in ("json", "form"):
        raise ConnectionConfigError(conn_id, "token_request_format", f"must be 'json' or 'form', got {fmt!r}")

    provider_id = _extra(extras, "provider_id")
    rate = _extra(extras, "max_requests_per_second")
    return OpenBankingConfig(
        conn_id=conn_id,
        base_url=base_url,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=refresh_token,
        provider_id=None if provider_id is None else str(provider_id),
        scopes=scopes,
        redirect_uri=None if redirect_uri is None else str(redirect_uri),
        token_path=_as_path(conn_id, "token_path", _extra(extras, "token_path"), "/api/v1/token"),
        fdx_base_path=_as_path(conn_id, "fdx_base_path", _extra(extras, "fdx_base_path"), "/api/fdx/5"),
        timeout=_as_number(conn_id, "timeout", _extra(extras, "timeout"), 60.0),
        page_size=page_size,
        verify=verify,
        token_request_format=fmt,
        token_store=_store_kind(extras),
        max_attempts=int(
            _as_number(conn_id, "max_attempts", _extra(extras, "max_attempts"), 6, integer=True)
        ),
        max_elapsed=_as_number(conn_id, "max_elapsed", _extra(extras, "max_elapsed"), 120.0),
        retry_initial_wait=_as_number(
            conn_id, "retry_initial_wait", _extra(extras, "retry_initial_wait"), 1.0
        ),
        use_pkce=_as_bool(conn_id, "use_pkce", _extra(extras, "use_pkce"), False),
        rotation_wait=_as_number(
            conn_id, "rotation_wait", _extra(extras, "rotation_wait"), 3.0, allow_zero=True
        ),
        consent_store_conn_id=_optional_str(conn_id, "consent_store_conn_id", extras),
        consent_store_fernet_conn_id=_optional_str(conn_id, "consent_store_fernet_conn_id", extras),
        max_response_bytes=int(
            _as_number(
                conn_id, "max_response_bytes", _extra(extras, "max_response_bytes"), 64 * 2**20, integer=True
            )
        ),
        max_requests_per_second=None
        if rate is None
        else _as_number(conn_id, "max_requests_per_second", rate, 0.0),
        max_pages=int(
            _as_number(conn_id, "max_pages", _extra(extras, "max_pages"), DEFAULT_MAX_PAGES, integer=True)
        ),
    )


__all__ = ["ALL_SCOPES", "CONN_TYPE", "OpenBankingConfig", "parse_connection"]
