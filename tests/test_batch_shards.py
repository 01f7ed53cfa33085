"""Consent selection for batched tasks: the shard hash, explicit lists, the max_map_length guard."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_openbanking.batch import (
    ConsentOutcome,
    check_map_length,
    check_shard,
    mapped_results,
    parse_consent_ids,
    parse_id_list,
    reason_code,
    select_consents,
    shard_count_for,
    shard_of,
)
from airflow_provider_openbanking.exceptions import (
    ConsentRequiredError,
    TransientApiError,
)


def test_the_shard_hash_is_stable_across_processes_and_pinned() -> None:
    ids = [f"cust-{i:05d}" for i in range(50)]
    here = [shard_of(c, 7) for c in ids]
    # A fresh interpreter (another PYTHONHASHSEED) computes the same shards: never hash().
    code = (
        f"from airflow_provider_openbanking.batch import shard_of\nprint([shard_of(c, 7) for c in {ids!r}])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == str(here)
    # Pinned to SHA-256: changing the hash would move every consent to another shard between runs.
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"cust-00001").digest()[:8], "big") % 4
    assert shard_of("cust-00001", 4) == expected


def test_the_shard_hash_is_balanced() -> None:
    ids = [f"cust-{i:05d}" for i in range(10_000)]
    for shards in (4, 40):
        sizes = Counter(shard_of(c, shards) for c in ids)
        assert set(sizes) == set(range(shards))
        mean = len(ids) / shards
        assert max(sizes.values()) < mean * 1.2 and min(sizes.values()) > mean * 0.8, sizes


def test_shards_partition_the_consents() -> None:
    ids = [f"c{i}" for i in range(1000)]
    count = shard_count_for(len(ids), 300)
    assert count == 4
    parts = [select_consents(ids, shard=(k, count)) for k in range(count)]
    assert sorted(c for part in parts for c in part) == sorted(ids)
    assert sum(len(p) for p in parts) == len(ids)
    assert shard_count_for(0, 300) == 1 and shard_count_for(301, 300) == 2


def test_one_id_list_parser_names_the_field_it_reads() -> None:
    from airflow_provider_openbanking.example_dags_support import parse_conn_ids

    for parse in (parse_id_list, parse_consent_ids, parse_conn_ids):
        assert parse(' ["b", "a ", "b"] ') == ["b", "a"]
        assert parse("b, a,b") == ["b", "a"] and parse(("a",)) == ["a"]
    assert parse_id_list(None) is None and parse_conn_ids(None) == [] and parse_conn_ids("") == []
    with pytest.raises(ValueError, match=r"^conn_ids is not a JSON list: '\[nope'$"):
        parse_conn_ids("[nope")
    with pytest.raises(ValueError, match=r"^conn_ids must be a list of strings, got dict$"):
        parse_conn_ids({"a": 1})
    with pytest.raises(ValueError, match=r"^a connection id must be a non-empty string, got 3$"):
        parse_conn_ids(["a", 3])
    with pytest.raises(ValueError, match=r"^shards must be a list of strings, got int$"):
        parse_id_list(7, field="shards", item="shard")


def test_mapped_results_reads_every_shape_airflow_hands_over() -> None:
    one = {"conn_id": "a"}
    assert mapped_results(None) == [] and mapped_results(one) == [one]
    assert mapped_results([one, None, {}, "not a result", {"conn_id": "b"}]) == [one, {"conn_id": "b"}]
    assert mapped_results(({"conn_id": "c"},)) == [{"conn_id": "c"}]


def test_selection_defaults_and_errors() -> None:
    assert select_consents(["a", "b"]) == ["default"]
    assert select_consents(None, consent_ids=["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(ValueError, match="not both"):
        select_consents(["a"], consent_ids=["a"], shard=(0, 1))
    assert parse_consent_ids('["x", " y "]') == ["x", "y"]
    assert parse_consent_ids("x, y,x") == ["x", "y"]
    assert parse_consent_ids(None) is None and parse_consent_ids("") is None
    with pytest.raises(ValueError, match="non-empty string"):
        parse_consent_ids(["x", ""])
    assert check_shard(None, None) is None
    assert check_shard("1", 3) == (1, 3)
    with pytest.raises(ValueError, match="set both or neither"):
        check_shard(1, None)
    with pytest.raises(ValueError, match="shard 3 of 3"):
        check_shard(3, 3)


def test_the_max_map_length_guard_names_length_limit_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    check_map_length(list(range(1024)), "the shard plan")  # the default limit holds 1024
    with pytest.raises(AirflowFailException) as info:
        check_map_length(list(range(1025)), "the shard plan")
    message = str(info.value)
    assert "1025 item(s)" in message and "max_map_length = 1024" in message
    assert "AIRFLOW__CORE__MAX_MAP_LENGTH" in message
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "10")
    with pytest.raises(AirflowFailException, match="11 item"):
        check_map_length(list(range(11)), "x")


def test_reason_codes_and_permanence() -> None:
    lost = ConsentRequiredError("GET /accounts", 401, "602", "Customer revoked access")
    refused = ConsentRequiredError("POST /api/v1/token", 400, "invalid_grant", "refused")
    busy = TransientApiError("GET /accounts", 503, "503", "maintenance")
    assert reason_code(lost) == "602"
    assert reason_code(refused) == "refresh_rejected"
    assert reason_code(busy) == "transient_503"
    outcome = ConsentOutcome("c")
    outcome.fail(busy, "acc-1")
    assert outcome.reason == "transient_503" and not outcome.permanent
    outcome.fail(lost, "acc-2")
    assert outcome.reason == "602" and outcome.permanent, "a lost consent cannot be retried into life"
