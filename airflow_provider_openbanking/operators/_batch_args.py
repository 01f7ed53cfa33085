"""The arguments the Open Banking operators share, declared once.

Every public operator spells its arguments out in its own signature and docstring (what a DAG
author reads, and what ``docs/api.md`` shows), but none of them handles the shared ones itself:
the operator hands them on with :func:`shared_arguments` and the base classes in
:mod:`~airflow_provider_openbanking.operators.openbanking` check and keep them
(``_OpenBankingBaseOperator``: connection, destination, interval, format, masking;
``_ConsentBatchOperator``: which consents and how many workers; ``_AccountsArgOperator`` and
``_PerAccountOperator``: which accounts). The docstring fragments below are appended to each
operator's docstring, so the shared arguments read the same everywhere.

``tests/operators/test_batch_args.py`` checks that each public operator's signature lists the
shared arguments of its base classes with the same defaults, and documents every one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Arguments an operator hands unchanged to its base classes, in the order they are documented.
SHARED_ARGUMENTS: tuple[str, ...] = (
    "openbanking_conn_id",
    "account_ids",
    "accounts_from_landing",
    "consent_ids",
    "shard_index",
    "shard_count",
    "destination",
    "start_time",
    "end_time",
    "max_workers",
    "include_full_account_number",
    "resume",
    "file_format",
)


def shared_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The shared arguments among an operator's ``locals()`` at the top of its ``__init__``.

    ``super().__init__(**shared_arguments(locals()), **kwargs)`` passes on exactly the shared
    arguments the operator's signature declares (not ``self``, not its own ones such as
    ``lookback``), so adding a shared argument means adding it to :data:`SHARED_ARGUMENTS`, the
    base class and each signature -- not to a dozen hand-written forwarding lists.
    """
    return {name: arguments[name] for name in SHARED_ARGUMENTS if name in arguments}


#: ``:param:`` lines of every per-customer (batched) operator.
CONSENTS_DOC = """
    :param openbanking_conn_id: the ``openbanking`` connection (the API client). (templated)
    :param consent_ids: consents of the connection to cover; default its ``default`` consent. (templated)
    :param shard_index: cover shard ``shard_index`` of ``shard_count`` of the connection's consents
        (stable hash of the consent id) instead of ``consent_ids``. (templated)
    :param shard_count: the number of shards. (templated)
    :param destination: ``ObjectStoragePath`` or URL files land under; default
        ``[openbanking] landing_destination``. (templated)
    :param start_time: start of the data interval; default the run's. (templated)
    :param end_time: end of the data interval (exclusive); default the run's. (templated)
    :param max_workers: threads across consents x accounts in this task.
    :param include_full_account_number: land full account numbers instead of masking them.
    :param resume: on a retry of the same run, keep what an earlier try landed (batches only).
"""

#: ``:param account_ids:`` of the operators that fetch a chosen set of accounts.
ACCOUNT_IDS_DOC = """
    :param account_ids: accounts to cover for every consent; default all of each consent. (templated)
"""

#: ``:param accounts_from_landing:`` of the operators that work account by account.
ACCOUNTS_FROM_LANDING_DOC = """
    :param accounts_from_landing: read each consent's account ids from the accounts file landed
        for the same interval (no ``/accounts`` request); fall back to the API without one.
"""


def operator_doc(doc: str | None, *fragments: str) -> str:
    """An operator's own docstring followed by the shared ``:param:`` fragments it takes."""
    return (doc or "").rstrip() + "\n" + "".join(fragments)


__all__ = [
    "ACCOUNTS_FROM_LANDING_DOC",
    "ACCOUNT_IDS_DOC",
    "CONSENTS_DOC",
    "SHARED_ARGUMENTS",
    "operator_doc",
    "shared_arguments",
]
