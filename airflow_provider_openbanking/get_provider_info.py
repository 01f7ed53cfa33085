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

# Numbers are declared as strings: the 3.3 UI draws only string and boolean extra fields, and the
# hook parses (and validates) numbers given as strings.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "refresh_token": {
        "label": "Refresh token",
        "description": "The customer's refresh token, if you have one. `airflow-openbanking authorize` "
        "stores a new consent (and the hook every rotated token) in the Variable "
        "openbanking_token__<conn_id> instead; a new value here wins over what is stored.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "provider_id": {
        "label": "Provider ID",
        "description": "Flinks Data Provider id used at /authorize (see `airflow-openbanking providers`).",
        "schema": {"type": ["string", "null"]},
    },
    "scopes": {
        "label": "Scopes",
        "description": "Space-separated FDX scopes to request. Default: all eight.",
        "schema": {"type": ["string", "null"]},
    },
    "redirect_uri": {
        "label": "Redirect URI",
        "description": "Redirect URI registered with Flinks; must match at /authorize and code exchange.",
        "schema": {"type": ["string", "null"]},
    },
    "page_size": {
        "label": "Page size",
        "description": "Records per page requested from FDX list endpoints (limit). Default: server's.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Timeout (s)",
        "description": "Timeout of every HTTP call in seconds. Default 60.",
        "schema": {"type": ["string", "null"]},
    },
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


#: The ``[openbanking]`` section of the Airflow configuration (``airflow config list`` shows it;
#: ``AIRFLOW__OPENBANKING__<OPTION>`` environment variables set it too).
CONFIG: dict[str, Any] = {
    "openbanking": {
        "description": "Where and how the Open Banking operators land files.",
        "options": {
            "landing_destination": {
                "description": "Default destination of the operators' files (and of the consent "
                "health records): an object storage URL (s3://bucket/prefix, gs://..., file:///...) or "
                "a local path. An operator's `destination` argument wins. Unset: "
                "file://$AIRFLOW_HOME/openbanking.",
                "version_added": "0.1.0",
                "type": "string",
                "example": "s3://my-bucket/openbanking",
                "default": None,
            },
            "file_format": {
                "description": "Default format of the landed records files: jsonl.gz (gzip JSON Lines), "
                "jsonl (plain JSON Lines) or parquet (typed columns; needs the [parquet] extra, "
                "pyarrow). An operator's `file_format` argument wins.",
                "version_added": "0.1.0",
                "type": "string",
                "example": "parquet",
                "default": "jsonl.gz",
            },
        },
    }
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata (package, modules, configuration, connection type and its form)."""
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
        "config": CONFIG,
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
