"""Validation of ``consents import`` files: every bad line is found before anything is written."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openbanking.consents import ConsentRecord, fingerprint
from airflow_provider_openbanking.consents.onboarding import (
    ImportFileError,
    detect_format,
    parse_import,
    records_for_import,
)

TOKEN = "rt-0123456789abcdef"


def jl(*objs: object) -> str:
    return "\n".join(json.dumps(o) for o in objs) + "\n"


@pytest.mark.parametrize(
    ("text", "fmt", "line", "words"),
    [
        (jl({"consent_id": "a"}), "jsonl", 1, "refresh_token is missing"),
        (
            jl({"consent_id": "a", "refresh_token": TOKEN}, {"refresh_token": TOKEN}),
            "jsonl",
            2,
            "consent_id is missing",
        ),
        (jl({"consent_id": "a", "refresh_token": ""}), "jsonl", 1, "refresh_token is missing or empty"),
        (
            jl({"consent_id": "a", "refresh_token": TOKEN}, {"consent_id": "a", "refresh_token": "rt-x" * 5}),
            "jsonl",
            2,
            "duplicate",
        ),
        ('{"consent_id": "a", "refresh_token": ' + "\n", "jsonl", 1, "not valid JSON"),
        (jl({"consent_id": "a b", "refresh_token": TOKEN}), "jsonl", 1, "not valid"),
        (jl({"consent_id": "a", "refresh_token": TOKEN, "token": 1}), "jsonl", 1, "unknown field(s) token"),
        (jl({"consent_id": "a", "refresh_token": 42}), "jsonl", 1, "non-empty string"),
        (jl({"consent_id": "a", "refresh_token": TOKEN + " x"}), "jsonl", 1, "whitespace"),
        (jl({"consent_id": "a", "refresh_token": TOKEN, "scopes": "NOPE"}), "jsonl", 1, "scopes"),
        (jl([1, 2]), "jsonl", 1, "expected an object"),
        ("consent_id,token\na,b\n", "csv", 1, "lacks column(s) refresh_token"),
        (f"consent_id,refresh_token\na,{TOKEN}\nb,{TOKEN},extra\n", "csv", 3, "more values"),
        (f"consent_id,refresh_token\n\na,{TOKEN}\na,{TOKEN}\n", "csv", 4, "duplicate"),
        ("", "jsonl", 0, "holds no consent"),
    ],
)
def test_a_bad_line_is_named_and_never_shows_the_token(text: str, fmt: str, line: int, words: str) -> None:
    with pytest.raises(ImportFileError) as err:
        parse_import(text, fmt, "f")
    assert err.value.line == line and words in str(err.value)
    if line:
        assert f"line {line}:" in str(err.value)
    assert TOKEN not in str(err.value)


def test_valid_files_in_both_formats_and_blank_lines() -> None:
    rows = parse_import(
        "\n"
        + jl(
            {"consent_id": "cust-1", "refresh_token": TOKEN, "scopes": ["ACCOUNT_BASIC"], "provider_id": 1000}
        ),
        "jsonl",
    )
    assert [(r.line, r.consent_id, r.scopes, r.provider_id) for r in rows] == [
        (2, "cust-1", "ACCOUNT_BASIC", "1000")
    ]
    assert TOKEN not in repr(rows)
    rows = parse_import(
        f"consent_id,refresh_token,provider_id\r\ncust-1,{TOKEN},\r\ncust-2,{TOKEN}x,77\r\n", "csv"
    )
    assert [(r.consent_id, r.provider_id) for r in rows] == [("cust-1", None), ("cust-2", "77")]
    assert detect_format("a.csv", "{") == "csv" and detect_format("x", ' {"a":1}') == "jsonl"
    assert detect_format("x.txt", "consent_id,refresh_token") == "csv"


def test_records_replace_a_token_and_keep_history() -> None:
    old = ConsentRecord("c", "k", refresh_token="rt-old-00000000000", state="needs_reauthorization",
                        created_at="2026-01-01T00:00:00+00:00", last_success_at="2026-02-01T00:00:00+00:00",
                        access_token="at-old-000000000000", last_error="invalid_grant")  # fmt: skip
    rows = parse_import(
        jl(
            {"consent_id": "k", "refresh_token": TOKEN},
            {"consent_id": "default", "refresh_token": TOKEN + "d"},
        ),
        "jsonl",
    )
    new, default = records_for_import("c", rows, {"k": old}, connection_refresh_token="rt-conn-000000000")
    assert (
        new.refresh_token == TOKEN
        and new.state == "active"
        and new.access_token is None
        and new.last_error is None
    )
    assert new.created_at == old.created_at and new.last_success_at == old.last_success_at
    assert new.origin == fingerprint(TOKEN)
    # the imported default consent descends from the connection's token, so it takes precedence
    assert default.origin == fingerprint("rt-conn-000000000")
