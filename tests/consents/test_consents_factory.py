"""Picking a connection's consent store: the named kinds and a dotted class path (consents/factory.py)."""

from __future__ import annotations

import pytest

from airflow_provider_openbanking.consents.factory import build_store
from airflow_provider_openbanking.consents.memory import InMemoryConsentStore
from airflow_provider_openbanking.consents.store import ConsentStoreError


class NotAStore:
    """A class that is importable but is no ConsentStore."""


def test_a_dotted_class_path_builds_that_store() -> None:
    store = build_store("airflow_provider_openbanking.consents.memory.InMemoryConsentStore")
    assert type(store) is InMemoryConsentStore


@pytest.mark.parametrize(
    "kind",
    ["airflow_provider_openbanking.consents.nope.Store", "airflow_provider_openbanking.consents.memory.Nope"],
)
def test_an_unimportable_class_path_is_named(kind: str) -> None:
    with pytest.raises(ConsentStoreError, match="cannot be imported") as info:
        build_store(kind)
    assert kind in str(info.value)


def test_a_class_that_is_no_store_is_refused() -> None:
    with pytest.raises(ConsentStoreError, match="is not a ConsentStore"):
        build_store(f"{__name__}.NotAStore")


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ConsentStoreError, match="variable, sql, memory"):
        build_store("redis")
