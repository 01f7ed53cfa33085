"""The connection form declares every documented extra, in the shape Airflow 3.3's UI draws well.

What the browser shows was checked with ``scripts/check_connection_form.py`` (headless Chromium on
a real ``airflow api-server``); these fast checks keep the declaration honest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_openbanking.connection import KNOWN_EXTRAS, parse_connection
from airflow_provider_openbanking.get_provider_info import CONN_FIELDS, get_provider_info

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_extras() -> set[str]:
    """Extras named in the README's ``openbanking`` connection section (table and "Other extras")."""
    text = README.read_text()
    section = text.split("## The `openbanking` connection", 1)[1].split("The same connection as an", 1)[0]
    names: set[str] = set()
    for group in re.findall(r"extra ((?:`[a-z_]+`(?:, )?)+)", section):  # the table
        names |= set(re.findall(r"`([a-z_]+)`", group))
    other = section.split("Other extras", 1)[1]
    names |= set(re.findall(r"`([a-z][a-z_]+)`\s*\(", other))  # "`name` (default ...)"
    return names


def form_connection(extra: Any) -> Any:
    """A connection as the form saves it, with ``extra`` (its JSON text, or a dict)."""
    return SimpleNamespace(
        conn_id="ob_form",
        host="https://ob.flinksapp.com",
        schema=None,
        port=None,
        login="client",
        password="secret",
        extra=extra,
    )


def test_every_documented_extra_has_a_form_field():
    documented = documented_extras()
    assert {"refresh_token", "provider_id", "timeout", "verify", "use_pkce", "max_elapsed"} <= documented
    assert documented - set(CONN_FIELDS) == set()


def test_the_form_and_the_parser_know_the_same_extras():
    assert set(CONN_FIELDS) == set(KNOWN_EXTRAS)


def test_every_extra_the_parser_reads_is_known_and_has_a_form_field():
    """The extras ``parse_connection`` actually looks up (recorded while it parses), not only the
    list it declares: a new extra read without a form field fails here."""

    class Recording(dict[str, Any]):
        read: set[str] = set()

        def get(self, key: Any, default: Any = None) -> Any:
            self.read.add(str(key).removeprefix("extra__openbanking__"))
            return super().get(key, default)

        def __getitem__(self, key: Any) -> Any:
            self.read.add(str(key).removeprefix("extra__openbanking__"))
            return super().__getitem__(key)

    parse_connection(form_connection(Recording()))
    assert {"refresh_token", "max_pages", "max_requests_per_second", "consent_store"} <= Recording.read
    assert Recording.read - set(KNOWN_EXTRAS) == set()
    assert Recording.read - set(CONN_FIELDS) == set()


def test_the_connection_type_declares_the_fields():
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["conn-fields"] is CONN_FIELDS


@pytest.mark.parametrize("name", sorted(CONN_FIELDS))
def test_field_shape(name: str):
    from airflow.sdk._shared.secrets_masker.secrets_masker import should_hide_value_for_key

    field = CONN_FIELDS[name]
    schema = field["schema"]
    assert field["label"] and "description" not in field, "descriptions go to schema.description_md"
    assert schema["description_md"].strip()
    kinds = [t for t in schema["type"] if t != "null"]
    assert len(kinds) == 1
    if should_hide_value_for_key(name):
        # Airflow would show (and save) a default of a sensitive-named field as "***"
        assert schema["default"] is None
    else:
        assert schema["default"] is not None, "a null default pre-fills the Extra JSON with null"
        python_type = {"boolean": bool, "integer": int, "number": (int, float), "string": str}[kinds[0]]
        assert schema["default"] == "" or isinstance(schema["default"], python_type)


def test_booleans_and_numbers_are_typed():
    kind = {name: next(t for t in f["schema"]["type"] if t != "null") for name, f in CONN_FIELDS.items()}
    assert kind["use_pkce"] == "boolean"
    assert {kind[n] for n in ("timeout", "max_elapsed", "retry_initial_wait", "rotation_wait")} == {"number"}
    assert {kind[n] for n in ("page_size", "max_attempts", "max_response_bytes", "max_pages")} == {"integer"}
    assert CONN_FIELDS["token_request_format"]["schema"]["enum"] == ["json", "form"]
    assert CONN_FIELDS["refresh_token"]["schema"]["format"] == "password"


def test_an_untouched_new_form_means_the_defaults():
    """What the Add form puts in the Extra JSON parses to the same settings as no extras at all."""

    from_form = parse_connection(
        form_connection(json.dumps({n: f["schema"]["default"] for n, f in CONN_FIELDS.items()}))
    )
    from_nothing = parse_connection(form_connection(json.dumps({})))
    assert from_form == from_nothing
