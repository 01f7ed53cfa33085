"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point.

Airflow 3.2+ builds the connection form from ``connection-types`` here ("YAML first"), so this is
the single source of truth for the ``openbanking`` form; the hook's legacy
``get_connection_form_widgets``/``get_ui_field_behaviour`` are derived from it.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_openbanking import __version__

ALL_SCOPES = (
    "ACCOUNT_BASIC ACCOUNT_DETAILED ACCOUNT_PAYMENTS INVESTMENTS TRANSACTIONS STATEMENTS "
    "CUSTOMER_CONTACT CUSTOMER_PERSONAL"
)


def _field(
    label: str,
    description: str,
    kind: str = "string",
    default: Any = "",
    *,
    example: str | None = None,
    enum: list[str] | None = None,
    secret: bool = False,
) -> dict[str, Any]:
    """One extra field of the form, as Airflow 3.3's UI draws it.

    - The description goes to ``schema.description_md``: the UI renders it as Markdown, so
      ``code`` shows as code instead of raw backticks.
    - Every field has a non-null default -- the provider's own default, or ``""`` (= not set; the
      hook reads a blank extra as absent) -- because the UI copies every field's value into the
      Extra JSON of a new connection, and ``null`` there reads like a broken connection. Except
      fields whose *name* Airflow deems sensitive (``*token*``): Airflow shows and would save their
      default as ``***``, so they stay ``None`` (and their default is in the description).
    - ``example`` fills the input's suggestion list (the 3.3 UI shows no other placeholder for
      extra fields); booleans are booleans (a switch), numbers are numbers, choices a select.
    """
    schema: dict[str, Any] = {"type": [kind, "null"], "default": default, "description_md": description}
    if example is not None:
        schema["examples"] = [example]
    if enum is not None:
        schema["enum"] = enum
    if secret:
        schema["format"] = "password"
    return {"label": label, "schema": schema}


CONN_FIELDS: dict[str, dict[str, Any]] = {
    "refresh_token": _field(
        "Refresh token",
        "The customer's refresh token, if you have one. `airflow-openbanking authorize` stores a new "
        "consent (and the hook every rotated token) in the consent store instead; a new value here "
        "wins over what is stored.",
        default=None,
        secret=True,
    ),
    "provider_id": _field(
        "Provider ID",
        "Flinks Data Provider id used at `/authorize` (list them with `airflow-openbanking providers`), "
        "e.g. `1000`.",
        example="1000",
    ),
    "scopes": _field(
        "Scopes",
        "Space-separated FDX scopes to request. Default: all eight.",
        default=ALL_SCOPES,
    ),
    "redirect_uri": _field(
        "Redirect URI",
        "Redirect URI registered with Flinks; must match at `/authorize` and at the code exchange, "
        "e.g. `https://example.com/callback`.",
        example="https://example.com/callback",
    ),
    "page_size": _field(
        "Page size",
        "Records per page asked of FDX list endpoints (`limit`). Empty: the server's default.",
        "integer",
        "",
    ),
    "timeout": _field("Timeout (s)", "Seconds every HTTP call may take. Default `60`.", "number", 60),
    "max_pages": _field(
        "Max pages",
        "Pages one list may walk before it ends with an error naming this extra. Default `100000`.",
        "integer",
        100_000,
    ),
    "verify": _field(
        "TLS verification",
        "`true` (default) verifies the server's certificate against the system's CAs; a path to a "
        "CA bundle verifies against that bundle; `false` turns the check off (never in production).",
        default="true",
        example="/etc/ssl/certs/ca-certificates.crt",
    ),
    "use_pkce": _field(
        "Use PKCE",
        "Add a PKCE (S256) challenge at `/authorize` and its verifier at the code exchange.",
        "boolean",
        False,
    ),
    "token_request_format": _field(
        "Token request format",
        "How token requests are encoded: `json` (Flinks' documented default, used when empty) or `form`.",
        default=None,
        enum=["json", "form"],
    ),
    "token_path": _field("Token path", "Path of the token endpoint. Empty: `/api/v1/token`.", default=None),
    "fdx_base_path": _field(
        "FDX base path",
        "Path under which the FDX 5 resources live; `/` for a server mounted at the root.",
        default="/api/fdx/5",
    ),
    "consent_store": _field(
        "Consent store",
        "Where consents (refresh tokens) are kept: `variable` (Airflow Variables, the default), "
        "`sql` (a table in the connection named below), `memory` (tests only) or a dotted class "
        "path. Empty: `sql` when a consent store connection is set, else `variable`.",
        example="variable",
    ),
    "consent_store_conn_id": _field(
        "Consent store connection",
        "A common-sql connection holding the consent table (implies consent store `sql`).",
    ),
    "consent_store_fernet_conn_id": _field(
        "Consent store Fernet key connection",
        "A connection whose password is the Fernet key of the SQL consent store. Empty: `[core] fernet_key`.",
    ),
    "token_store": _field(
        "Token store (old name)",
        "The 0.x name of the consent store setting; use Consent store instead.",
        default=None,
    ),
    "max_attempts": _field(
        "Max attempts",
        "Attempts one API call may take on transient errors (rate limits, 5xx, dropped connections). "
        "Default `6`.",
        "integer",
        6,
    ),
    "max_elapsed": _field(
        "Max elapsed (s)",
        "Seconds one API call may spend retrying; it gives up within this plus one timeout. Default `120`.",
        "number",
        120,
    ),
    "retry_initial_wait": _field(
        "First retry wait (s)",
        "Wait before the first retry; it doubles on each further retry (at most 30 s). Default `1`.",
        "number",
        1,
    ),
    "max_requests_per_second": _field(
        "Max requests per second",
        "Requests per second this client sends at most, shared by every thread of a worker. Empty: "
        "no limit (the server's `Retry-After` is still honoured).",
        "number",
        "",
    ),
    "max_response_bytes": _field(
        "Max response bytes",
        "Largest JSON response accepted; a larger page is refused with a clear error. Default "
        "`67108864` (64 MiB).",
        "integer",
        64 * 2**20,
    ),
    "rotation_wait": _field(
        "Rotation wait (s)",
        "How long a worker whose refresh token was refused waits for another worker's rotated token "
        "to appear in the store. Default `3`.",
        "number",
        3,
    ),
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"login": "Client ID", "password": "Client secret", "host": "API base URL"},
    "placeholders": {
        "host": "https://ob.flinksapp.com",
        "login": "your-client-id",
        "redirect_uri": "https://example.com/callback",
        "provider_id": "1000",
        "scopes": ALL_SCOPES,
        "extra": '{"token_path": "/api/v1/token", "fdx_base_path": "/api/fdx/5", "verify": true}',
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata (package, modules, connection type and its form)."""
    return {
        "package-name": "airflow-provider-openbanking",
        "name": "Open Banking (Flinks / FDX)",
        "description": "Pull customer-consented bank data from the Flinks Open Banking API (FDX 5).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Open Banking",
                "external-doc-url": "https://docs.flinks.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Open Banking",
                "python-modules": ["airflow_provider_openbanking.hooks.openbanking"],
            }
        ],
        "operators": [
            {
                "integration-name": "Open Banking",
                "python-modules": ["airflow_provider_openbanking.operators.openbanking"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Open Banking",
                "python-modules": ["airflow_provider_openbanking.sensors.openbanking"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Open Banking",
                "python-modules": ["airflow_provider_openbanking.triggers.openbanking"],
            }
        ],
        "notifications": ["airflow_provider_openbanking.notifications.log.LogNotifier"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_openbanking.hooks.openbanking.OpenBankingHook",
                "hook-name": "Open Banking (Flinks / FDX)",
                "connection-type": "openbanking",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
