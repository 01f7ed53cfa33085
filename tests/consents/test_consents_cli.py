"""``airflow-openbanking consents …`` against a connection made the way users make them.

The connection is created with ``airflow connections add`` in the test session's throw-away
metadata database (no ``AIRFLOW_CONN_*``): the CLI must find it as ``airflow connections get``
does. Consents are imported from JSON Lines and CSV into the default (Variable) store, listed,
checked, re-imported and revoked against the sandbox; no token is ever printed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openbanking import cli
from airflow_provider_openbanking.consents import VariableConsentStore
from airflow_provider_openbanking.hooks.openbanking import clear_token_cache


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(list(argv), stdin=io.StringIO(""), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def airflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def db_conn(sandbox: Any) -> Iterator[str]:
    """An ``openbanking`` connection in the metadata DB only (no consent of its own)."""
    conn_id = f"ob_meta_{uuid.uuid4().hex[:8]}"
    extra = {"redirect_uri": "http://127.0.0.1:0/callback", "retry_initial_wait": 0.05, "rotation_wait": 0.2}
    done = airflow(
        "connections", "add", conn_id,
        "--conn-type", "openbanking",
        "--conn-host", sandbox.url,
        "--conn-login", "demo-client",
        "--conn-password", "demo-secret",
        "--conn-extra", json.dumps(extra),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ
    clear_token_cache()
    yield conn_id
    airflow("connections", "delete", conn_id)


def test_consents_import_list_status_reimport_revoke(db_conn: str, sandbox: Any, tmp_path: Path) -> None:
    secrets: list[str] = []

    def grant(customer: str) -> str:
        secrets.append(sandbox.grant_consent(customer))
        return secrets[-1]

    # the connection is found in the metadata DB
    rc, out, err = run_cli("providers", "--conn-id", db_conn)
    assert rc == 0 and "1000" in out, err

    # a bad line aborts the whole import, naming it; nothing is written
    bad = tmp_path / "bad.jsonl"
    good_line = json.dumps({"consent_id": "alice", "refresh_token": grant("cust-0001")})
    bad.write_text(f"{good_line}\n\n" + json.dumps({"consent_id": "alice", "refresh_token": "x" * 20}) + "\n")
    rc, out, err = run_cli("consents", "import", "--conn-id", db_conn, str(bad))
    assert rc == 1 and "line 3" in err and "duplicate consent_id 'alice' (first on line 1)" in err, err
    assert VariableConsentStore().consent_ids(db_conn) == []
    empty_token = tmp_path / "empty.csv"
    empty_token.write_text("consent_id,refresh_token\nzed,\n")
    rc, _, err = run_cli("consents", "import", "--conn-id", db_conn, str(empty_token))
    assert rc == 1 and "line 2: refresh_token is missing or empty" in err

    # JSON Lines and CSV
    jsonl = tmp_path / "consents.jsonl"
    jsonl.write_text(
        good_line
        + "\n"
        + json.dumps({"consent_id": "bob", "refresh_token": grant("cust-0002"), "provider_id": "1000"})
        + "\n"
    )
    rc, out, err = run_cli("consents", "import", "--conn-id", db_conn, str(jsonl))
    assert rc == 0 and "Imported 2 consent(s)" in out and "2 new, 0 replaced" in out, err
    csv_file = tmp_path / "more.csv"
    csv_file.write_text(
        f"consent_id,refresh_token,scopes\ncarol,{grant('cust-0003')},ACCOUNT_BASIC TRANSACTIONS\n"
    )
    rc, out, err = run_cli("consents", "import", "--conn-id", db_conn, str(csv_file))
    assert rc == 0 and "1 new" in out, err

    rc, out, _ = run_cli("consents", "list", "--conn-id", db_conn, "--json")
    listed = json.loads(out)
    assert [c["consent_id"] for c in listed] == ["alice", "bob", "carol"]
    assert {c["state"] for c in listed} == {"active"} and listed[2]["scopes"] == "ACCOUNT_BASIC TRANSACTIONS"
    assert listed[1]["provider_id"] == "1000"

    rc, out, err = run_cli("status", "--conn-id", db_conn, "--consent-id", "bob")
    assert rc == 0 and "Consent:        bob" in out and "State:          ok" in out, out + err
    rc, out, _ = run_cli("consents", "list", "--conn-id", db_conn)
    assert "last_refresh_at".upper() in out and "3 consent(s)" in out and "3 active" in out

    # re-import replaces the token (state back to active, history kept)
    before = VariableConsentStore().load(db_conn, "alice")
    (tmp_path / "again.jsonl").write_text(
        json.dumps({"consent_id": "alice", "refresh_token": grant("cust-0001")}) + "\n"
    )
    rc, out, _ = run_cli("consents", "import", "--conn-id", db_conn, str(tmp_path / "again.jsonl"))
    after = VariableConsentStore().load(db_conn, "alice")
    assert rc == 0 and "0 new, 1 replaced" in out
    assert before is not None and after is not None
    assert after.refresh_token == secrets[-1] and after.created_at == before.created_at

    # revoke one consent, at the bank and in the store
    rc, out, err = run_cli("consents", "revoke", "--conn-id", db_conn, "--consent-id", "bob")
    assert rc == 0 and "revoked at the server" in out, err
    rc, out, _ = run_cli("consents", "list", "--conn-id", db_conn, "--json")
    assert {c["consent_id"]: c["state"] for c in json.loads(out)} == {
        "alice": "active",
        "bob": "revoked",
        "carol": "active",
    }
    rc, out, _ = run_cli("status", "--conn-id", db_conn, "--consent-id", "bob")
    assert rc == cli.EXIT_NO_CONSENT and "State:          revoked" in out and "Idle lapse" not in out

    # a real process of its own finds the connection and the consents too
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_openbanking", "consents", "list", "--conn-id", db_conn],
        env=os.environ.copy(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "alice" in proc.stdout and "revoked" in proc.stdout, proc.stderr
    printed = out + proc.stdout + proc.stderr
    for secret in secrets:
        assert secret not in printed


def test_import_needs_a_known_connection_and_a_readable_file(tmp_path: Path) -> None:
    rc, _, err = run_cli("consents", "import", "--conn-id", "nope_missing", str(tmp_path / "missing.jsonl"))
    assert rc == 1 and "cannot read the file" in err and "nothing imported" in err
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"consent_id": "a", "refresh_token": "rt-0123456789abcdef"}) + "\n")
    rc, _, err = run_cli("consents", "import", "--conn-id", "nope_missing", str(ok))
    assert rc == 1 and "connection 'nope_missing' is not defined" in err.lower()
    assert "airflow connections add nope_missing" in err


def test_import_into_a_sql_store_whose_connection_is_in_the_metadata_db(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both connections made with ``airflow connections add``: the SQL hook must find the store's."""
    from airflow.configuration import conf
    from cryptography.fernet import Fernet

    if not conf.get("core", "fernet_key", fallback=""):  # the SQL store always encrypts
        monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    suffix = uuid.uuid4().hex[:8]
    store_id, conn_id = f"ob_store_{suffix}", f"ob_sqlclient_{suffix}"
    database = tmp_path / "consents.db"
    done = airflow("connections", "add", store_id, "--conn-type", "sqlite", "--conn-host", str(database))
    assert done.returncode == 0, done.stderr
    extra = {"redirect_uri": "http://127.0.0.1:0/callback", "consent_store_conn_id": store_id}
    done = airflow(
        "connections", "add", conn_id,
        "--conn-type", "openbanking", "--conn-host", sandbox.url,
        "--conn-login", "demo-client", "--conn-password", "demo-secret",
        "--conn-extra", json.dumps(extra),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"AIRFLOW_CONN_{store_id.upper()}" not in os.environ
    token = sandbox.grant_consent("cust-0002")
    (tmp_path / "one.jsonl").write_text(json.dumps({"consent_id": "dora", "refresh_token": token}) + "\n")
    try:
        rc, out, err = run_cli("consents", "import", "--conn-id", conn_id, str(tmp_path / "one.jsonl"))
        assert rc == 0 and "Imported 1 consent(s)" in out, out + err
        assert f"AIRFLOW_CONN_{store_id.upper()}" not in os.environ  # offered to the hook only meanwhile
        rc, out, err = run_cli("consents", "list", "--conn-id", conn_id, "--json")
        assert rc == 0 and [c["consent_id"] for c in json.loads(out)] == ["dora"], err
        assert token.encode() not in database.read_bytes()  # encrypted at rest
    finally:
        airflow("connections", "delete", conn_id)
        airflow("connections", "delete", store_id)
