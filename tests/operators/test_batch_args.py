"""The operators' shared arguments: declared in every public signature, handled once.

Each public operator spells out its arguments (what a DAG author reads) and passes the shared ones
on with ``shared_arguments(locals())``; these tests fail when a signature drifts from the base
classes (a missing argument, another default, an undocumented one) or when forwarding loses one.
"""

from __future__ import annotations

import datetime as dt
import inspect
from typing import Any

import pytest

from airflow_provider_openbanking.operators import openbanking as ops
from airflow_provider_openbanking.operators._batch_args import SHARED_ARGUMENTS, shared_arguments

PUBLIC = [
    cls
    for name, cls in sorted(vars(ops).items())
    if inspect.isclass(cls) and issubclass(cls, ops._OpenBankingBaseOperator) and not name.startswith("_")
]
#: Accepted by every operator through ``**kwargs`` (documented on the base class), not spelled out;
#: providers carry no account numbers, so their operator does not offer to unmask them.
NOT_SPELLED_OUT = {"file_format"}
NOT_SPELLED_OUT_BY = {"OpenBankingProvidersOperator": {"include_full_account_number"}}


def _keyword_defaults(func: Any) -> dict[str, Any]:
    return {
        name: param.default
        for name, param in inspect.signature(func).parameters.items()
        if param.kind is param.KEYWORD_ONLY
    }


def _base_defaults(cls: type) -> dict[str, Any]:
    """The shared arguments the base classes of ``cls`` take, with their defaults."""
    out: dict[str, Any] = {}
    for base in cls.__mro__[1:]:
        if base.__module__ == ops.__name__ and "__init__" in vars(base):
            for name, default in _keyword_defaults(vars(base)["__init__"]).items():
                out.setdefault(name, default)
    left_out = NOT_SPELLED_OUT | NOT_SPELLED_OUT_BY.get(cls.__name__, set())
    return {n: d for n, d in out.items() if n in SHARED_ARGUMENTS and n not in left_out}


def test_every_public_operator_is_checked() -> None:
    assert {cls.__name__ for cls in PUBLIC} >= {
        "OpenBankingAccountsOperator",
        "OpenBankingTransactionsOperator",
        "OpenBankingStatementsOperator",
        "OpenBankingAccountContactOperator",
        "OpenBankingPaymentNetworksOperator",
        "OpenBankingCustomerOperator",
        "OpenBankingHoldingsOperator",
        "OpenBankingProvidersOperator",
    }


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_signature_lists_the_base_arguments_with_their_defaults(cls: type) -> None:
    own = _keyword_defaults(vars(cls)["__init__"])
    expected = _base_defaults(cls)
    assert expected, cls
    missing = sorted(set(expected) - set(own))
    assert not missing, f"{cls.__name__} does not spell out {missing}"
    assert {n: own[n] for n in expected} == expected


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_docstring_documents_every_argument(cls: type) -> None:
    own = _keyword_defaults(vars(cls)["__init__"])
    doc = cls.__doc__ or ""
    undocumented = sorted(n for n in own if f":param {n}:" not in doc)
    assert not undocumented, f"{cls.__name__} does not document {undocumented}"


def test_shared_arguments_takes_only_the_shared_names() -> None:
    values = {"self": object(), "__class__": object, "lookback": 3, "consent_ids": ["a"], "resume": False}
    assert shared_arguments(values) == {"consent_ids": ["a"], "resume": False}


def test_forwarded_arguments_reach_the_operator() -> None:
    op = ops.OpenBankingTransactionsOperator(
        task_id="t",
        openbanking_conn_id="ob_other",
        lookback=3,
        account_ids="acc-1,acc-2",
        accounts_from_landing=True,
        consent_ids=["c1", "c2"],
        destination="file:///tmp/landing",
        start_time="2026-11-01",
        end_time="2026-11-02",
        max_workers=2,
        include_full_account_number=True,
        resume=False,
        file_format="jsonl",
        retries=5,
    )
    assert (op.openbanking_conn_id, op.destination) == ("ob_other", "file:///tmp/landing")
    assert (op.start_time, op.end_time) == ("2026-11-01", "2026-11-02")
    assert op.selected_account_ids() == ["acc-1", "acc-2"] and op.accounts_from_landing is True
    assert op.consent_ids == ["c1", "c2"] and op.batched
    assert (op.max_workers, op.include_full_account_number, op.resume) == (2, True, False)
    assert op.file_format == "jsonl" and op.retries == 5
    assert op.lookback == dt.timedelta(days=3)


def test_shard_arguments_are_checked_once_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="not both"):
        ops.OpenBankingCustomerOperator(task_id="t", consent_ids=["a"], shard_index=0, shard_count=2)
    with pytest.raises(ValueError, match="max_workers"):
        ops.OpenBankingHoldingsOperator(task_id="t", max_workers=0)
    op = ops.OpenBankingStatementsOperator(task_id="t", shard_index=1, shard_count=4, download=False)
    assert op.batch_name() == "shard=0001-of-0004" and op.download is False
