"""The Open Banking operators inside real DAGs (``dag.test()``) against the sandbox (issue 4).

Each test reads what landed and compares it with the sandbox's own view (``sandbox.truth_*``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import types
from pathlib import Path

import pytest

from airflow_provider_openbanking.hooks.openbanking import OpenBankingHook
from airflow_provider_openbanking.landing import Layout, read_records, to_storage_path
from airflow_provider_openbanking.operators.openbanking import (
    OpenBankingAccountContactOperator,
    OpenBankingAccountsOperator,
    OpenBankingCustomerOperator,
    OpenBankingHoldingsOperator,
    OpenBankingPaymentNetworksOperator,
    OpenBankingProvidersOperator,
    OpenBankingStatementsOperator,
    OpenBankingTransactionsOperator,
)
from tests.operators.dagrun_helpers import UTC, daily_dag, run_dag

CUSTOMER = "cust-0001"
# A daily schedule with real data intervals: the run of 2026-11-20 covers [11-19, 11-20).
LOGICAL = dt.datetime(2026, 11, 20, tzinfo=UTC)
START, END = dt.datetime(2026, 11, 19, tzinfo=UTC), dt.datetime(2026, 11, 20, tzinfo=UTC)
INTERVAL = "interval=20261119T000000Z_20261120T000000Z"
#: Every customer dataset lands under its consent; these tests use the connection's own consent.
CONSENT = "consent_id=default"


def landed_files(root: Path) -> list[str]:
    """Every file under ``root`` (relative paths), hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def local(url: str) -> Path:
    assert url.startswith("file://"), url
    return Path(url[len("file://") :])


def ids(records: list[dict], key: str) -> list[str]:
    return sorted(r[key] for r in records)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "landing"


def test_every_operator_lands_what_the_bank_has(openbanking_conn, sandbox, dest, capfd):
    truth = {a["accountId"]: a for a in sandbox.truth_accounts(CUSTOMER)}
    account_ids = list(truth)
    deposit_ids = [a for a, v in truth.items() if v["accountCategory"] == "DEPOSIT_ACCOUNT"]
    investment = [a for a, v in truth.items() if v["accountCategory"] == "INVESTMENT_ACCOUNT"]
    full_numbers = [v["accountNumber"] for v in truth.values()]

    with daily_dag("ob_every_operator") as dag:
        common = {"destination": str(dest)}
        OpenBankingProvidersOperator(task_id="providers", **common)
        OpenBankingAccountsOperator(task_id="accounts", result_type="details", **common)
        OpenBankingAccountsOperator(
            task_id="accounts_by_id",
            result_type="details",
            account_ids="{{ params.accounts }}",  # templated, comma separated
            include_full_account_number=True,
            destination=str(dest / "full"),
            params={"accounts": ",".join(account_ids[:2])},
        )
        OpenBankingTransactionsOperator(task_id="transactions", max_workers=3, **common)
        OpenBankingStatementsOperator(
            task_id="statements",
            start_time="2026-10-01",
            end_time="{{ macros.ds_add('2026-11-01', 0) }}",
            account_ids=account_ids[:2],
            **common,
        )
        OpenBankingAccountContactOperator(task_id="contacts", account_ids=account_ids[:3], **common)
        OpenBankingPaymentNetworksOperator(task_id="payment_networks", **common)
        OpenBankingCustomerOperator(task_id="customer", destination=str(dest) + "/{{ dag.dag_id }}")
        OpenBankingHoldingsOperator(task_id="holdings", **common)

    result = run_dag(dag, LOGICAL)
    assert set(result.states.values()) == {"success"}, result.states
    x = result.xcoms
    out = capfd.readouterr().out

    # -- XCom: small metadata only --------------------------------------------------------------
    for task_id, meta in x.items():
        assert {"dataset", "conn_id", "interval_start", "interval_end", "paths", "records", "pages"} <= set(
            meta
        ), task_id
        assert meta["conn_id"] == openbanking_conn
        text = json.dumps(meta)
        assert len(text) < 8000, task_id
        assert not any(n in text for n in full_numbers), task_id
        for path in meta["paths"]:
            assert local(path).is_file()
    assert x["transactions"]["interval_start"] == START.isoformat()
    assert x["transactions"]["interval_end"] == END.isoformat()

    # -- transactions: one file per account, ids equal the bank's, window widened by lookback ---
    tx = x["transactions"]
    assert (tx["query_start"], tx["query_end"]) == ("2026-11-05", "2026-11-19")
    assert sorted(tx["accounts"]) == sorted(account_ids)
    total = 0
    for account_id in account_ids:
        expected = sandbox.truth_transactions(account_id, "2026-11-05", "2026-11-19")
        path = Layout(
            to_storage_path(str(dest)), "transactions", openbanking_conn, START, END, "default"
        ).records_file(account_id)
        assert tx["accounts"][account_id]["path"] == str(path)
        assert str(path).endswith(
            f"transactions/conn_id={openbanking_conn}/{CONSENT}/{INTERVAL}/account_id={account_id}.jsonl.gz"
        )
        landed = read_records(path)
        assert ids(landed, "transactionId") == ids(expected, "transactionId")
        # records land as the bank serves them, unwrapped (the FDX 5 wrapper becomes accountCategory)
        assert [{k: v for k, v in r.items() if k != "accountCategory"} for r in landed] == expected
        assert {r["accountCategory"] for r in landed} == {truth[account_id]["accountCategory"]}
        assert tx["accounts"][account_id]["records"] == len(expected)
        total += len(expected)
    assert tx["records"] == total and tx["pages"] >= len(account_ids)
    assert tx["dropped"] == 0 == tx["accounts"][account_ids[0]]["dropped"]  # Flinks sends what is asked
    assert any(r["status"] == "PENDING" for r in read_records(tx["paths"][0]) + read_records(tx["paths"][1]))

    # -- accounts: one file, full numbers masked, display kept ---------------------------------
    accounts = read_records(x["accounts"]["paths"][0])
    assert x["accounts"]["paths"][0].endswith(
        f"accounts/conn_id={openbanking_conn}/{CONSENT}/{INTERVAL}/accounts.jsonl.gz"
    )
    assert ids(accounts, "accountId") == sorted(account_ids)
    for record in accounts:
        number = truth[record["accountId"]]["accountNumber"]
        assert record["accountNumber"] == "*" * (len(number) - 4) + number[-4:]
        assert record["accountNumberDisplay"] == truth[record["accountId"]]["accountNumberDisplay"]
    by_id = read_records(x["accounts_by_id"]["paths"][0])
    assert [r["accountId"] for r in by_id] == account_ids[:2]
    assert [r["accountNumber"] for r in by_id] == [truth[a]["accountNumber"] for a in account_ids[:2]]

    # -- statements: list per account + the PDF files ------------------------------------------
    st = x["statements"]
    assert (st["query_start"], st["query_end"]) == ("2026-10-01", "2026-10-31")
    assert sorted(st["accounts"]) == sorted(account_ids[:2])
    assert "interval=20261001T000000Z_20261101T000000Z" in st["paths"][0]
    listed = [s for p in st["paths"] for s in read_records(p)]
    assert len(listed) == 2 and all(s["statementDate"] == "2026-10-31" for s in listed)
    assert len(st["files"]) == 2
    for statement in listed:
        (file_url,) = [f for f in st["files"] if f.endswith(f"/{statement['statementId']}.pdf")]
        assert f"/statement_files/conn_id={openbanking_conn}/{CONSENT}/" in file_url
        assert f"/account_id={statement['accountId']}/" in file_url
        assert local(file_url).read_bytes().startswith(b"%PDF")

    # -- contacts, payment networks (704 skipped), customer, holdings, providers ---------------
    contacts = [c for p in x["contacts"]["paths"] for c in read_records(p)]
    assert ids(contacts, "accountId") == sorted(account_ids[:3])
    assert all(c["holders"] and c["emails"] for c in contacts)

    pn = x["payment_networks"]
    assert sorted(pn["accounts"]) == sorted(deposit_ids)
    assert sorted(pn["skipped"]) == sorted(set(account_ids) - set(deposit_ids))
    assert all(reason.startswith("704") for reason in pn["skipped"].values())
    networks = [n for p in pn["paths"] for n in read_records(p)]
    assert networks and all(n["accountId"] in deposit_ids for n in networks)
    assert all(n["identifier"].startswith("***") for n in networks)  # full account number: masked

    (customer,) = read_records(x["customer"]["paths"][0])
    assert customer["customerId"] == CUSTOMER
    assert f"/ob_every_operator/customer/conn_id={openbanking_conn}/{CONSENT}/" in x["customer"]["paths"][0]

    holdings = read_records(x["holdings"]["paths"][0])
    expected_holdings = [h for a in investment for h in truth[a]["holdings"]]
    assert len(holdings) == len(expected_holdings) > 0
    assert {h["accountId"] for h in holdings} == set(investment)

    providers = read_records(x["providers"]["paths"][0])
    assert {p["id"] for p in providers} == {"1000", "1001", "1002"}

    # -- logs: progress per page and per account; never a token nor a full account number ------
    assert "transactions acc-" in out and "so far" in out and "elapsed" in out
    assert f"skipping account {investment[0]} (704" in out
    for number in full_numbers:
        assert number not in out
    token = OpenBankingHook(openbanking_conn).get_access_token()
    assert token not in out and token not in json.dumps(x)

    # -- nothing but the landed files under the destination (no temporary leftovers) -----------
    everything = landed_files(dest)
    assert not [f for f in everything if ".partial" in f]
    expected_count = sum(len(m["paths"]) + len(m.get("files", [])) for m in x.values())
    assert len(everything) == expected_count


def test_rerun_replaces_files_never_duplicates(openbanking_conn, sandbox, dest):
    account_ids = [a["accountId"] for a in sandbox.truth_accounts(CUSTOMER)][:2]
    with daily_dag("ob_rerun") as dag:
        OpenBankingTransactionsOperator(
            task_id="transactions",
            account_ids=account_ids,
            lookback=dt.timedelta(days=3),
            destination=str(dest),
        )

    first = run_dag(dag, LOGICAL)
    assert first.states == {"transactions": "success"}
    before = landed_files(dest)
    assert len(before) == 2
    assert first.xcoms["transactions"]["query_start"] == "2026-11-16"

    sandbox.configure(transactions_per_account=150)  # the bank's data changes between the runs
    second = run_dag(dag, LOGICAL)
    assert second.states == {"transactions": "success"}
    assert landed_files(dest) == before  # same paths: replaced, not added
    assert second.xcoms["transactions"]["paths"] == first.xcoms["transactions"]["paths"]
    for account_id, meta in second.xcoms["transactions"]["accounts"].items():
        expected = sandbox.truth_transactions(account_id, "2026-11-16", "2026-11-19")
        landed = read_records(meta["path"])
        assert ids(landed, "transactionId") == ids(expected, "transactionId")
        assert (
            meta["records"] == len(expected) != first.xcoms["transactions"]["accounts"][account_id]["records"]
        )


def test_failed_and_unavailable_accounts(openbanking_conn, sandbox, dest, capfd):
    """705 is skipped and reported; another error fails the task at the end, after the other
    accounts landed."""
    account_ids = [a["accountId"] for a in sandbox.truth_accounts(CUSTOMER)]
    closed, broken = account_ids[1], account_ids[3]
    sandbox.inject(
        {
            "kind": "status",
            "status": 409,
            "code": "705",
            "message": "Account closed",
            "path": f"/{closed}/",
            "count": 99,
        },
        {
            "kind": "status",
            "status": 404,
            "code": "701",
            "message": "Account not found",
            "path": f"/{broken}/",
            "count": 99,
        },
    )
    with daily_dag("ob_failures") as dag:
        OpenBankingTransactionsOperator(task_id="transactions", destination=str(dest), retries=0)

    result = run_dag(dag, LOGICAL)
    out = capfd.readouterr().out
    assert result.states == {"transactions": "failed"}
    assert "transactions" not in result.xcoms
    landed = {p.name for p in dest.rglob("*.jsonl.gz")}
    assert landed == {f"account_id={a}.jsonl.gz" for a in account_ids if a not in (closed, broken)}
    assert f"skipping account {closed} (705" in out
    assert f"1 account(s) failed ({broken}: ApiError" in out
    assert not [p for p in dest.rglob("*") if ".partial" in p.name]


def test_revoked_consent_fails_at_once_and_keeps_what_landed(openbanking_conn, sandbox, dest, capfd):
    account_ids = [a["accountId"] for a in sandbox.truth_accounts(CUSTOMER)]
    # The consent is revoked while the task runs: from the third account on, the bank answers 602.
    sandbox.inject(
        {"kind": "status", "status": 401, "code": "602", "path": f"/{account_ids[2]}/", "count": 99},
    )
    with daily_dag("ob_revoked") as dag:
        OpenBankingTransactionsOperator(
            task_id="transactions",
            account_ids=account_ids[:3],
            max_workers=1,
            destination=str(dest),
            retries=3,
            retry_delay=dt.timedelta(seconds=0),
        )
    result = run_dag(dag, LOGICAL)
    out = capfd.readouterr().out
    assert result.states == {"transactions": "failed"}  # no retry: AirflowFailException
    assert result.tries["transactions"] == 1
    assert {p.name for p in dest.rglob("*.jsonl.gz")} == {f"account_id={a}.jsonl.gz" for a in account_ids[:2]}
    assert "must re-authorize" in out and "2 file(s) landed before this stay in place" in out

    # A consent revoked before the run: the very first call fails the same way.
    OpenBankingHook(openbanking_conn).get_access_token()  # a live access token, as a worker would have
    sandbox.clear_faults()
    sandbox.revoke_consent(customer_id=CUSTOMER)
    with daily_dag("ob_revoked_before") as dag2:
        OpenBankingCustomerOperator(task_id="customer", destination=str(dest / "again"), retries=2)
    result = run_dag(dag2, LOGICAL)
    assert result.states == {"customer": "failed"} and result.tries["customer"] == 1
    assert "must re-authorize" in capfd.readouterr().out
    assert not (dest / "again").exists()


# -- no DAG needed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "start_time", "end_time", "expected"),
    [
        # a real interval
        ({"data_interval_start": START, "data_interval_end": END}, None, None, (START, END)),
        # CronTriggerTimetable / manual: start == end -> the day before the logical date
        (
            {"data_interval_start": LOGICAL, "data_interval_end": LOGICAL, "logical_date": LOGICAL},
            None,
            None,
            (START, END),
        ),
        (
            {"logical_date": dt.datetime(2026, 11, 20, 14, 35, tzinfo=UTC)},
            None,
            None,
            (START, END),
        ),
        # explicit values win (strings, dates, naive = UTC)
        (
            {},
            "2026-10-01",
            dt.date(2026, 11, 1),
            (dt.datetime(2026, 10, 1, tzinfo=UTC), dt.datetime(2026, 11, 1, tzinfo=UTC)),
        ),
        (
            {"data_interval_start": START, "data_interval_end": END},
            "2026-11-19T06:00:00",
            None,
            (START.replace(hour=6), END),
        ),
    ],
)
def test_interval_resolution(context, start_time, end_time, expected):
    op = OpenBankingTransactionsOperator(task_id="t", start_time=start_time, end_time=end_time)
    assert op.resolve_interval(context) == expected


def test_interval_and_argument_errors():
    with pytest.raises(ValueError, match="after end_time"):
        OpenBankingTransactionsOperator(
            task_id="t", start_time="2026-11-20", end_time="2026-11-19"
        ).resolve_interval({})
    with pytest.raises(ValueError, match="not an ISO date"):
        OpenBankingTransactionsOperator(task_id="t", start_time="yesterday").resolve_interval({})
    with pytest.raises(ValueError, match="max_workers"):
        OpenBankingTransactionsOperator(task_id="t", max_workers=0)
    with pytest.raises(ValueError, match="lookback"):
        OpenBankingTransactionsOperator(task_id="t", lookback=-1)
    op = OpenBankingTransactionsOperator(task_id="t", lookback=2)
    assert op.query_window(START, END) == {"query_start": "2026-11-17", "query_end": "2026-11-19"}
    # an hourly interval still asks for its whole day (the API filters on days)
    assert op.query_window(START.replace(hour=5), START.replace(hour=6))["query_end"] == "2026-11-19"


def test_template_fields_and_ui():
    for cls in (
        OpenBankingProvidersOperator,
        OpenBankingAccountsOperator,
        OpenBankingTransactionsOperator,
        OpenBankingStatementsOperator,
        OpenBankingAccountContactOperator,
        OpenBankingPaymentNetworksOperator,
        OpenBankingCustomerOperator,
        OpenBankingHoldingsOperator,
    ):
        assert {"openbanking_conn_id", "destination", "start_time", "end_time"} <= set(cls.template_fields)
        assert cls.ui_color
    for cls in (OpenBankingAccountsOperator, OpenBankingTransactionsOperator, OpenBankingHoldingsOperator):
        assert "account_ids" in cls.template_fields


def test_openlineage_outputs_are_the_landed_files(monkeypatch):
    op = OpenBankingTransactionsOperator(task_id="t")
    op._landed_paths = ["file:///data/ob/transactions/a.jsonl", "s3://bucket/ob/transactions/b.jsonl"]
    op._landed_files = ["s3://bucket/ob/statement_files/c.pdf"]
    # The OpenLineage provider is not installed here: the method says "nothing" instead of failing.
    assert "airflow.providers.openlineage" not in sys.modules or os.environ.get("OL_PRESENT")
    assert op.get_openlineage_facets_on_complete(None) is None

    class Dataset:
        def __init__(self, namespace, name):
            self.namespace, self.name = namespace, name

    class OperatorLineage:
        def __init__(self, outputs):
            self.outputs = outputs

    facet = types.ModuleType("airflow.providers.common.compat.openlineage.facet")
    facet.Dataset = Dataset
    extractors = types.ModuleType("airflow.providers.openlineage.extractors")
    extractors.OperatorLineage = OperatorLineage
    monkeypatch.setitem(sys.modules, "airflow.providers.common.compat.openlineage.facet", facet)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", extractors)
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("file", "/data/ob/transactions/a.jsonl"),
        ("s3://bucket", "ob/statement_files/c.pdf"),
        ("s3://bucket", "ob/transactions/b.jsonl"),
    ]


def test_memory_stays_flat_however_many_transactions(make_conn, sandbox, dest):
    """The hook pages lazily and the operator writes as it reads: 8x the records, same peak."""
    import tracemalloc

    conn_id = make_conn("ob_memory", page_size=500)
    account_id = sandbox.truth_accounts(CUSTOMER)[0]["accountId"]
    sandbox.configure(page_size=500)
    peaks = {}
    for n in (5_000, 40_000):
        sandbox.configure(account_transactions={account_id: n})
        op = OpenBankingTransactionsOperator(
            task_id="t",
            openbanking_conn_id=conn_id,
            account_ids=[account_id],
            destination=str(dest / str(n)),
            start_time="2026-08-01",
            end_time="2026-11-21",
            lookback=0,
        )
        tracemalloc.start()
        try:
            meta = op.execute({})
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert meta["records"] >= n and meta["pages"] >= n // 500
    assert peaks[40_000] < peaks[5_000] * 1.5 + 1_000_000, peaks
