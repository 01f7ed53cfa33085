"""Deterministic bank data for the sandbox.

Everything is derived from ``seed``: customers, accounts, holdings and, lazily, transactions.
Transaction ``i`` of an account is computed on demand from ``(seed, account, i)``; posting times
are non-decreasing in ``i``, so a posted-date window maps to an index range by binary search and
a page is a slice of indices. Nothing proportional to the number of transactions is kept in memory.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
DAY = 86400
EPOCH = dt.date(1970, 1, 1)
MAX_DELAY_DAYS = 3
PENDING_PREFIX = "p"

TXN_WRAPPERS = {
    "deposit": "depositTransaction",
    "loc": "locTransaction",
    "loan": "loanTransaction",
    "investment": "investmentTransaction",
}
ACCOUNT_WRAPPERS = {
    "deposit": "depositAccount",
    "loc": "locAccount",
    "loan": "loanAccount",
    "investment": "investmentAccount",
}
ACCOUNT_CATEGORIES = {
    "deposit": "DEPOSIT_ACCOUNT",
    "loc": "LOC_ACCOUNT",
    "loan": "LOAN_ACCOUNT",
    "investment": "INVESTMENT_ACCOUNT",
}
LIGHTWEIGHT_FIELDS = (
    "accountId",
    "accountCategory",
    "accountType",
    "accountNumberDisplay",
    "productName",
    "nickname",
    "status",
    "description",
    "currency",
)


def mix64(x: int) -> int:
    """SplitMix64 finalizer: a cheap, well-distributed 64-bit hash of a 64-bit integer."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def stable_key(*parts: object) -> int:
    """A 64-bit key from arbitrary parts, stable across processes (unlike ``hash()``)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


class Rng:
    """Tiny deterministic generator for the (small) static data."""

    def __init__(self, *parts: object) -> None:
        self.state = stable_key(*parts)

    def next(self) -> int:
        self.state = (self.state + GAMMA) & M64
        return mix64(self.state)

    def below(self, n: int) -> int:
        return self.next() % n

    def between(self, lo: int, hi: int) -> int:
        return lo + self.next() % (hi - lo + 1)

    def choice(self, seq: tuple[Any, ...] | list[Any]) -> Any:
        return seq[self.below(len(seq))]

    def digits(self, n: int) -> str:
        return "".join(str(self.below(10)) for _ in range(n))


_DAY_CACHE: dict[int, str] = {}


def day_str(day: int) -> str:
    s = _DAY_CACHE.get(day)
    if s is None:
        s = _DAY_CACHE[day] = (EPOCH + dt.timedelta(days=day)).isoformat()
    return s


def iso_ts(seconds: int) -> str:
    """Epoch seconds -> ``YYYY-MM-DDThh:mm:ss.000Z`` (fast path, UTC)."""
    day, rem = divmod(seconds, DAY)
    hour, rem = divmod(rem, 3600)
    minute, sec = divmod(rem, 60)
    return f"{day_str(day)}T{hour:02d}:{minute:02d}:{sec:02d}.000Z"


def date_to_epoch(d: dt.date) -> int:
    return (d - EPOCH).days * DAY


def epoch_to_datetime(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def datetime_to_epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(value.timestamp())


def money(cents: int) -> float:
    return cents / 100


# --------------------------------------------------------------------------------------------
# Transaction profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    description: str  # "{n}" is replaced by a store/reference number
    category: str
    dcm: str  # CREDIT | DEBIT
    lo: int  # amount range in cents
    hi: int
    weight: int
    txn_type: str | None = None
    payee: str | None = None
    memo: str | None = None
    tip: bool = False  # a card authorization: the posted amount adds a tip / final amount
    check: bool = False
    trade: str | None = None  # investment: "buy" | "sell" | "dividend"
    step: int = 1  # amounts are multiples of this (cents)


def _card(txn_type: str | None) -> list[Profile]:
    return [
        Profile("TIM HORTONS #{n}", "Coffee Shops", "DEBIT", 250, 1500, 12, txn_type, "Tim Hortons"),
        Profile("METRO #{n} MONTREAL", "Groceries", "DEBIT", 1500, 18000, 10, txn_type, "Metro"),
        Profile("IGA EXTRA #{n}", "Groceries", "DEBIT", 1200, 15000, 5, txn_type, "IGA"),
        Profile("SHELL C{n}", "Gas and Fuel", "DEBIT", 3000, 9000, 6, txn_type, "Shell", tip=True),
        Profile("AMAZON.CA*{n}", "Shopping", "DEBIT", 1000, 20000, 6, txn_type, "Amazon"),
        Profile("NETFLIX.COM", "Subscriptions", "DEBIT", 1699, 2099, 1, txn_type, "Netflix"),
        Profile("SPOTIFY P{n}", "Subscriptions", "DEBIT", 1199, 1199, 1, txn_type, "Spotify"),
        Profile(
            "RESTAURANT CHEZ LEVEQUE",
            "Restaurants",
            "DEBIT",
            2500,
            12000,
            6,
            txn_type,
            "Chez Leveque",
            tip=True,
        ),
        Profile("UBER *TRIP {n}", "Transportation", "DEBIT", 800, 4500, 4, txn_type, "Uber", tip=True),
        Profile("SAQ #{n}", "Alcohol and Bars", "DEBIT", 1500, 8000, 2, txn_type, "SAQ"),
        Profile("PHARMAPRIX #{n}", "Pharmacy", "DEBIT", 500, 6000, 3, txn_type, "Pharmaprix"),
        Profile("STM OPUS RECHARGE", "Public Transportation", "DEBIT", 9700, 9700, 1, txn_type, "STM"),
    ]


CHECKING_PROFILES: list[Profile] = [
    *_card(None),
    Profile("PAYROLL DEPOSIT ACME CORP", "Income", "CREDIT", 180000, 320000, 3, memo="Payroll"),
    Profile("HYDRO-QUEBEC", "Utilities", "DEBIT", 6000, 20000, 1, payee="Hydro-Quebec"),
    Profile("BELL CANADA", "Phone and Internet", "DEBIT", 8000, 15000, 1, payee="Bell Canada"),
    Profile("INTERAC E-TRANSFER RECEIVED", "Transfer", "CREDIT", 2000, 50000, 3, memo="Rent share"),
    Profile("INTERAC E-TRANSFER SENT", "Transfer", "DEBIT", 2000, 50000, 3, memo="Dinner"),
    Profile("ATM WITHDRAWAL #{n}", "Cash", "DEBIT", 2000, 20000, 3, step=2000),
    Profile("CHEQUE #{c}", "Cheque", "DEBIT", 5000, 150000, 1, check=True),
    Profile("MONTHLY ACCOUNT FEE", "Bank Fees", "DEBIT", 495, 495, 1),
]
SAVINGS_PROFILES: list[Profile] = [
    Profile("INTEREST EARNED", "Interest", "CREDIT", 5, 2000, 3),
    Profile("TRANSFER FROM CHEQUING", "Transfer", "CREDIT", 5000, 100000, 5, memo="Online banking"),
    Profile("TRANSFER TO CHEQUING", "Transfer", "DEBIT", 5000, 60000, 3, memo="Online banking"),
    Profile("INTERAC E-TRANSFER RECEIVED", "Transfer", "CREDIT", 2000, 30000, 1),
    Profile("PRE-AUTHORIZED DEBIT TFSA", "Investments", "DEBIT", 10000, 50000, 1),
]
CARD_PROFILES: list[Profile] = [
    *_card("PURCHASE"),
    Profile("PAYMENT - THANK YOU", "Credit Card Payment", "CREDIT", 5000, 200000, 4, "PAYMENT"),
    Profile("PURCHASE INTEREST", "Interest", "DEBIT", 200, 5000, 1, "INTEREST"),
    Profile("ANNUAL FEE", "Bank Fees", "DEBIT", 12000, 12000, 1, "FEE"),
    Profile("CASH ADVANCE #{n}", "Cash", "DEBIT", 2000, 40000, 1, "WITHDRAWAL", step=2000),
]
LOAN_PROFILES: list[Profile] = [
    Profile("LOAN PAYMENT", "Loan Payment", "CREDIT", 150000, 250000, 6, "PAYMENT", memo="Scheduled payment"),
    Profile("INTEREST CHARGED", "Interest", "DEBIT", 20000, 90000, 5, "INTEREST"),
    Profile("PREPAYMENT", "Loan Payment", "CREDIT", 50000, 500000, 1, "DOUBLE_UP_PAYMENT"),
    Profile("LATE PAYMENT FEE", "Bank Fees", "DEBIT", 2500, 2500, 1, "FEE"),
    Profile("ADJUSTMENT", "Adjustment", "CREDIT", 100, 5000, 1, "ADJUSTMENT"),
]
INVESTMENT_PROFILES: list[Profile] = [
    Profile("BUY {sym}", "Investments", "DEBIT", 0, 0, 6, "PURCHASED", trade="buy"),
    Profile("SELL {sym}", "Investments", "CREDIT", 0, 0, 3, "SOLD", trade="sell"),
    Profile("DIVIDEND {sym}", "Dividends", "CREDIT", 500, 40000, 4, "DIVIDEND", trade="dividend"),
    Profile("CONTRIBUTION", "Transfer", "CREDIT", 10000, 600000, 2, "CONTRIBUTION"),
    Profile("INTEREST ON CASH", "Interest", "CREDIT", 10, 3000, 1, "INTEREST"),
    Profile("ACCOUNT FEE", "Bank Fees", "DEBIT", 995, 2500, 1, "FEE"),
]


def _slot_table(profiles: list[Profile]) -> tuple[int, ...]:
    return tuple(idx for idx, p in enumerate(profiles) for _ in range(p.weight))


SECURITIES: tuple[tuple[str, str, str, str, int], ...] = (
    # symbol, ISIN, name, holdingType, price in cents
    ("RY", "CA7800871021", "Royal Bank of Canada", "STOCK", 17250),
    ("TD", "CA8911605092", "Toronto-Dominion Bank", "STOCK", 8410),
    ("ENB", "CA29250N1050", "Enbridge Inc.", "STOCK", 5630),
    ("SHOP", "CA82509L1076", "Shopify Inc.", "STOCK", 15320),
    ("CNR", "CA1363751027", "Canadian National Railway", "STOCK", 16480),
    ("XIU", "CA46428D1087", "iShares S&P/TSX 60 Index ETF", "MUTUALFUND", 3795),
    ("VFV", "CA92205G1037", "Vanguard S&P 500 Index ETF", "MUTUALFUND", 14860),
    ("ZAG", "CA05590A1093", "BMO Aggregate Bond Index ETF", "MUTUALFUND", 1402),
)


# --------------------------------------------------------------------------------------------
# Customers and accounts
# --------------------------------------------------------------------------------------------

FIRST_NAMES = ("Marie", "Jean", "Sophie", "Olivier", "Emma", "Lucas", "Chloe", "Nathan", "Amelia", "Liam")
LAST_NAMES = (
    "Tremblay",
    "Gagnon",
    "Roy",
    "Cote",
    "Bouchard",
    "Gauthier",
    "Morin",
    "Lavoie",
    "Fortin",
    "Smith",
)
STREETS = (
    "Rue Sainte-Catherine O",
    "Boulevard Saint-Laurent",
    "Avenue du Parc",
    "Rue Sherbrooke E",
    "Yonge St",
)
CITIES = (
    ("Montreal", "QC", "H3B"),
    ("Laval", "QC", "H7N"),
    ("Quebec", "QC", "G1R"),
    ("Toronto", "ON", "M5V"),
)


@dataclass
class Customer:
    customer_id: str
    first: str
    last: str
    email: str
    address: dict[str, str]
    telephones: list[dict[str, str]]
    accounts: list[Account] = field(default_factory=list)

    def name(self) -> dict[str, str]:
        return {"first": self.first, "last": self.last}


@dataclass
class Account:
    account_id: str
    customer_id: str
    kind: str  # deposit | loc | loan | investment
    account_type: str
    product_name: str
    nickname: str
    number: str
    currency: str
    key: int
    profiles: list[Profile]
    slots: tuple[int, ...]
    details: dict[str, Any]
    holdings: list[dict[str, Any]] = field(default_factory=list)
    bank_id: str = ""

    @property
    def display(self) -> str:
        return "****" + self.number[-4:]

    @property
    def wrapper(self) -> str:
        return ACCOUNT_WRAPPERS[self.kind]

    @property
    def txn_wrapper(self) -> str:
        return TXN_WRAPPERS[self.kind]

    def lightweight(self) -> dict[str, Any]:
        return {
            "accountId": self.account_id,
            "accountCategory": ACCOUNT_CATEGORIES[self.kind],
            "accountType": self.account_type,
            "accountNumberDisplay": self.display,
            "productName": self.product_name,
            "nickname": self.nickname,
            "status": "OPEN",
            "description": f"{self.product_name} {self.display}",
            "currency": {"currencyCode": self.currency},
        }

    def full(self, balance_as_of: str, *, holdings: bool) -> dict[str, Any]:
        out = self.lightweight()
        out["accountNumber"] = self.number
        out.update(self.details)
        out["balanceAsOf"] = balance_as_of
        if self.kind == "investment" and holdings:
            out["holdings"] = [dict(h) for h in self.holdings]
        return out

    def contact(self, customer: Customer) -> dict[str, Any]:
        return {
            "holders": [{"type": "CONSUMER", "relationship": "PRIMARY", "name": customer.name()}],
            "emails": [customer.email],
            "addresses": [dict(customer.address)],
            "telephones": [dict(t) for t in customer.telephones],
        }

    def payment_networks(self) -> list[dict[str, Any]]:
        if self.kind != "deposit":
            return []
        return [
            {
                "bankId": self.bank_id,
                "identifier": self.number,
                "type": "CA_ACSS",
                "transferIn": True,
                "transferOut": True,
            },
            {
                "bankId": self.bank_id,
                "identifier": self.number,
                "type": "CA_LVTS",
                "transferIn": True,
                "transferOut": False,
            },
        ]


DEPOSIT_EXTRA = (
    ("CHECKING", "US Dollar Account", "USD Chequing", "USD"),
    ("MONEYMARKET", "Money Market Savings", "Rainy day", "CAD"),
    ("CD", "GIC 1 Year", "GIC", "CAD"),
    ("SAVINGS", "Tax-Free Savings", "TFSA savings", "CAD"),
    ("OTHERDEPOSIT", "Joint Account", "Joint", "CAD"),
)


@dataclass(frozen=True)
class Statement:
    statement_id: str
    account_id: str
    year: int
    month: int
    statement_date: dt.date
    period_start: dt.date

    @property
    def month_name(self) -> str:
        return f"{calendar.month_name[self.month]} {self.year}"


#: Customers kept built (with their accounts, ~10 KB each); the rest are rebuilt on demand.
CUSTOMER_CACHE = 4096


class CustomerList(Sequence["Customer"]):
    """``bank.customers``: every customer, in order, built lazily."""

    def __init__(self, bank: Bank) -> None:
        self._bank = bank

    def __len__(self) -> int:
        return self._bank.n_customers

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._bank.customer_at(i) for i in range(*index.indices(len(self)))]
        i = index + len(self) if index < 0 else index
        return self._bank.customer_at(i)

    def __iter__(self) -> Iterator[Customer]:
        for i in range(len(self)):
            yield self._bank.customer_at(i)


class CustomerIndex(Mapping[str, "Customer"]):
    """``bank.customer_by_id``: ``cust-0001`` ... parsed, never stored."""

    def __init__(self, bank: Bank) -> None:
        self._bank = bank

    def __getitem__(self, customer_id: str) -> Customer:
        c = self._bank.customer_index(customer_id)
        if c is None:
            raise KeyError(customer_id)
        return self._bank.customer_at(c)

    def __contains__(self, customer_id: object) -> bool:
        return isinstance(customer_id, str) and self._bank.customer_index(customer_id) is not None

    def __len__(self) -> int:
        return self._bank.n_customers

    def __iter__(self) -> Iterator[str]:
        for c in range(self._bank.n_customers):
            yield f"cust-{c + 1:04d}"


class AccountIndex(Mapping[str, "Account"]):
    """``bank.account_by_id``: found by binary search in a sorted id index."""

    def __init__(self, bank: Bank) -> None:
        self._bank = bank

    def __getitem__(self, account_id: str) -> Account:
        slot = self._bank.account_slot(account_id)
        if slot is None:
            raise KeyError(account_id)
        c, k = divmod(slot, self._bank.accounts_per_customer)
        return self._bank.customer_at(c).accounts[k]

    def __contains__(self, account_id: object) -> bool:
        return isinstance(account_id, str) and self._bank.account_slot(account_id) is not None

    def __len__(self) -> int:
        return self._bank.n_customers * self._bank.accounts_per_customer

    def __iter__(self) -> Iterator[str]:
        for customer in self._bank.customers:
            for account in customer.accounts:
                yield account.account_id


class Bank:
    """The static part of the data (customers, accounts, holdings); transactions are lazy."""

    def __init__(
        self,
        *,
        seed: int = 42,
        customers: int = 3,
        accounts_per_customer: int = 6,
        transactions_per_account: int = 400,
        days: int = 90,
        end_date: dt.date = dt.date(2026, 11, 20),
    ) -> None:
        if customers < 1 or accounts_per_customer < 1 or days < 1 or transactions_per_account < 0:
            raise ValueError("customers, accounts-per-customer and days must be >= 1")
        self.seed = seed
        self.days = days
        self.end_date = end_date
        self.transactions_per_account = transactions_per_account
        self.n_customers = customers
        self.accounts_per_customer = accounts_per_customer
        self.start_date = end_date - dt.timedelta(days=days - 1)
        self.span_start = date_to_epoch(self.start_date)
        self.span_end = date_to_epoch(end_date) + DAY  # exclusive
        # Customers (and their accounts) are built on first use and kept in a bounded cache, so a
        # bank of 100,000 customers starts in seconds and holds only an id index (8 bytes/account).
        self._built: OrderedDict[int, Customer] = OrderedDict()
        self._id_keys, self._id_slots, self._rerolled = self._index_account_ids()
        self._rerolled_by_id = {aid: slot for slot, (aid, _) in self._rerolled.items()}
        self.customers = CustomerList(self)
        self.customer_by_id = CustomerIndex(self)
        self.account_by_id = AccountIndex(self)
        self._series: OrderedDict[tuple[str, int], TxnSeries] = OrderedDict()

    @property
    def default_now(self) -> int:
        return self.span_end - 1

    # ---- construction -----------------------------------------------------------------------

    def _primary_id(self, c: int, k: int) -> int:
        """The 48 bits behind ``acc-<12 hex>`` (the top of a stable 64-bit key)."""
        return stable_key(self.seed, "account-id", c, k) >> 16

    def _index_account_ids(self) -> tuple[array, array, dict[int, tuple[str, int]]]:
        """Sorted account-id keys with their slots (``c * accounts_per_customer + k``).

        Ids that collide with an earlier one (astronomically rare) are re-rolled the way the eager
        builder always did; those few live in a dict: ``{slot: (account id, rolls)}``.
        """
        apc = self.accounts_per_customer
        pairs = sorted(
            (self._primary_id(c, k), c * apc + k) for c in range(self.n_customers) for k in range(apc)
        )
        keys = array("Q", (p[0] for p in pairs))
        slots = array("Q", (p[1] for p in pairs))
        has_dups = any(pairs[i][0] == pairs[i - 1][0] for i in range(1, len(pairs)))
        del pairs
        rerolled: dict[int, tuple[str, int]] = {}
        if has_dups:  # replay the eager builder, in order, to re-roll exactly the same ids
            taken: set[str] = set()
            for c in range(self.n_customers):
                for k in range(apc):
                    rng = Rng(self.seed, "account", c, k)
                    account_id, rolls = f"acc-{self._primary_id(c, k):012x}", 0
                    while account_id in taken:
                        account_id = "acc-" + format(rng.next(), "016x")[:12]
                        rolls += 1
                    taken.add(account_id)
                    if rolls:
                        rerolled[c * apc + k] = (account_id, rolls)
        return keys, slots, rerolled

    def customer_at(self, c: int) -> Customer:
        """Customer number ``c`` (0-based), built on first use and cached (least recently used out)."""
        customer = self._built.get(c)
        if customer is not None:
            self._built.move_to_end(c)
            return customer
        if not 0 <= c < self.n_customers:
            raise IndexError(c)
        customer = self._make_customer(c)
        for k in range(self.accounts_per_customer):
            customer.accounts.append(self._make_account(customer, c, k))
        self._built[c] = customer
        if len(self._built) > CUSTOMER_CACHE:
            self._built.popitem(last=False)
        return customer

    def customer_index(self, customer_id: str) -> int | None:
        """``cust-0042`` -> 41; None for anything that is not one of this bank's customer ids."""
        if not isinstance(customer_id, str) or not customer_id.startswith("cust-"):
            return None
        digits = customer_id[5:]
        if not digits.isdigit() or not digits.isascii():
            return None
        n = int(digits)
        if f"{n:04d}" != digits or not 1 <= n <= self.n_customers:
            return None
        return n - 1

    def account_slot(self, account_id: str) -> int | None:
        """The slot (``c * accounts_per_customer + k``) of an account id, or None."""
        if not isinstance(account_id, str):
            return None
        slot = self._rerolled_by_id.get(account_id)
        if slot is not None:
            return slot
        hexpart = account_id[4:]
        if not account_id.startswith("acc-") or len(hexpart) != 12:
            return None
        try:
            key = int(hexpart, 16)
        except ValueError:
            return None
        if f"{key:012x}" != hexpart:
            return None
        i = bisect_left(self._id_keys, key)
        if i == len(self._id_keys) or self._id_keys[i] != key:
            return None
        slot = int(self._id_slots[i])
        if slot in self._rerolled:  # its primary id belongs to the earlier account
            return None
        return slot

    def _make_customer(self, c: int) -> Customer:
        rng = Rng(self.seed, "customer", c)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        city, region, fsa = rng.choice(CITIES)
        address = {
            "line1": f"{rng.between(10, 9999)} {rng.choice(STREETS)}",
            "city": city,
            "region": region,
            "postalCode": f"{fsa} {rng.below(10)}{chr(65 + rng.below(26))}{rng.below(10)}",
            "country": "CA",
        }
        phones = [
            {"type": "CELL", "country": "1", "number": "514" + rng.digits(7)},
            {"type": "HOME", "country": "1", "number": "438" + rng.digits(7)},
        ]
        email = f"{first}.{last}{c + 1}@example.com".lower()
        return Customer(f"cust-{c + 1:04d}", first, last, email, address, phones)

    def _make_account(self, customer: Customer, c: int, k: int) -> Account:
        rng = Rng(self.seed, "account", c, k)
        key = stable_key(self.seed, "txn", c, k)
        account_id = "acc-" + format(stable_key(self.seed, "account-id", c, k), "016x")[:12]
        rerolled = self._rerolled.get(c * self.accounts_per_customer + k)
        if rerolled is not None:  # astronomically unlikely: the id of an earlier account
            account_id, rolls = rerolled
            for _ in range(rolls):
                rng.next()
        bank_id = "001" + rng.digits(5)
        end = self.end_date
        currency = "CAD"
        holdings: list[dict[str, Any]] = []
        if k == 0:
            kind, atype, product, nick = "deposit", "CHECKING", "Everyday Chequing", "Main chequing"
            number = rng.digits(7)
            details = self._deposit_details(rng, 50000, 900000)
            profiles = CHECKING_PROFILES
        elif k == 1:
            kind, atype, product, nick = "deposit", "SAVINGS", "High Interest Savings", "Savings"
            number = rng.digits(7)
            details = self._deposit_details(rng, 200000, 4000000)
            details["interestRate"] = 2.25
            profiles = SAVINGS_PROFILES
        elif k == 2:
            kind, atype, product, nick = "loc", "CREDITCARD", "Rewards Visa", "Visa"
            number = "4520" + rng.digits(12)
            limit = rng.between(20, 150) * 10000
            balance = rng.between(5000, limit // 2)
            details = {
                "creditLine": money(limit),
                "availableCredit": money(limit - balance),
                "currentBalance": money(balance),
                "minimumPaymentAmount": money(max(1000, balance // 30)),
                "nextPaymentAmount": money(max(1000, balance // 30)),
                "nextPaymentDate": (end + dt.timedelta(days=12)).isoformat(),
                "lastPaymentAmount": money(rng.between(5000, 200000)),
                "lastPaymentDate": (end - dt.timedelta(days=18)).isoformat(),
                "lastStmtBalance": money(rng.between(5000, limit // 2)),
                "lastStmtDate": (end.replace(day=1) - dt.timedelta(days=1)).isoformat(),
                "purchasesApr": 20.99,
                "advancesApr": 22.99,
            }
            profiles = CARD_PROFILES
        elif k == 3:
            kind = "loan"
            number = rng.digits(9)
            original = rng.between(200, 700) * 100000
            if c % 2 == 0:
                atype, product, nick, term = "MORTGAGE", "Fixed Rate Mortgage", "Home", 300
            else:
                original //= 20
                atype, product, nick, term = "LOAN", "Personal Loan", "Car loan", 60
            originated = end - dt.timedelta(days=rng.between(400, 2000))
            principal = original * rng.between(55, 95) // 100
            payment = original // term + original // 200
            details = {
                "principalBalance": money(principal),
                "originalPrincipal": money(original),
                "originatingDate": originated.isoformat(),
                "loanTerm": term,
                "nextPaymentAmount": money(payment),
                "nextPaymentDate": (end + dt.timedelta(days=10)).isoformat(),
                "lastPaymentAmount": money(payment),
                "lastPaymentDate": (end - dt.timedelta(days=20)).isoformat(),
                "maturityDate": (originated + dt.timedelta(days=term * 365 // 12)).isoformat(),
                "interestPaidYearToDate": money(principal * 4 // 100 * 10 // 12),
                "interestRate": 4.79 if atype == "MORTGAGE" else 7.49,
                "interestRateType": "FIXED" if atype == "MORTGAGE" else "VARIABLE",
            }
            if atype == "MORTGAGE":
                details["escrowBalance"] = money(rng.between(100000, 500000))
            profiles = LOAN_PROFILES
        elif k == 4:
            kind, atype, product, nick = "investment", "TAXABLE", "Self-Directed Brokerage", "Brokerage"
            number = "5" + rng.digits(8)
            holdings = self._holdings(rng, end)
            cash = sum(h["marketValue"] for h in holdings if h["cashAccount"])
            total = sum(h["marketValue"] for h in holdings)
            details = {"availableCashBalance": round(cash, 2), "currentValue": round(total, 2)}
            profiles = INVESTMENT_PROFILES
        else:
            kind = "deposit"
            atype, product, nick, currency = DEPOSIT_EXTRA[(k - 5) % len(DEPOSIT_EXTRA)]
            if k - 5 >= len(DEPOSIT_EXTRA):
                nick = f"{nick} {k - 4}"
            number = rng.digits(7)
            details = self._deposit_details(rng, 10000, 2000000)
            profiles = SAVINGS_PROFILES if atype != "CHECKING" else CHECKING_PROFILES
        return Account(
            account_id=account_id,
            customer_id=customer.customer_id,
            kind=kind,
            account_type=atype,
            product_name=product,
            nickname=nick,
            number=number,
            currency=currency,
            key=key,
            profiles=profiles,
            slots=_slot_table(profiles),
            details=details,
            holdings=holdings,
            bank_id=bank_id,
        )

    @staticmethod
    def _deposit_details(rng: Rng, lo: int, hi: int) -> dict[str, Any]:
        current = rng.between(lo, hi)
        available = current - rng.between(0, min(current, 30000))
        return {
            "currentBalance": money(current),
            "availableBalance": money(available),
            "routingTransitNumber": "001" + rng.digits(5),
        }

    @staticmethod
    def _holdings(rng: Rng, end: dt.date) -> list[dict[str, Any]]:
        picks = sorted({rng.below(len(SECURITIES)) for _ in range(6)})
        out: list[dict[str, Any]] = []
        for idx in picks:
            symbol, isin, name, htype, price = SECURITIES[idx]
            units = rng.between(5, 400)
            cur = price * rng.between(90, 110) // 100
            bought = price * rng.between(60, 105) // 100
            out.append(
                {
                    "securityId": isin,
                    "securityIdType": "ISIN",
                    "holdingName": name,
                    "holdingType": htype,
                    "symbol": symbol,
                    "purchasedPrice": money(bought),
                    "currentUnitPrice": money(cur),
                    "currentUnitPriceDate": end.isoformat(),
                    "units": units,
                    "marketValue": money(units * cur),
                    "cashAccount": False,
                    "currency": {"currencyCode": "CAD"},
                    "fiAttributes": [{"name": "isCashEquivalent", "value": "false"}],
                    "taxLots": [
                        {
                            "originalPurchaseDate": (
                                end - dt.timedelta(days=rng.between(60, 1500))
                            ).isoformat(),
                            "quantity": units,
                            "purchasedPrice": money(bought),
                            "costBasis": money(units * bought),
                            "currentValue": money(units * cur),
                            "positionType": "LONG",
                        }
                    ],
                }
            )
        cash = rng.between(10000, 1500000)
        out.append(
            {
                "holdingName": "Cash",
                "holdingType": "OTHER",
                "holdingSubType": "CASH",
                "symbol": "CASH",
                "units": money(cash),
                "currentUnitPrice": 1.0,
                "marketValue": money(cash),
                "cashAccount": True,
                "currency": {"currencyCode": "CAD"},
                "fiAttributes": [{"name": "isCashEquivalent", "value": "true"}],
            }
        )
        return out

    # ---- lookups ----------------------------------------------------------------------------

    def series(self, account: Account, n: int) -> TxnSeries:
        """The (cached) lazy transaction series of ``account`` holding ``n`` transactions in the span."""
        cache_key = (account.account_id, n)
        s = self._series.get(cache_key)
        if s is None:
            s = TxnSeries(account, n, self.span_start, self.span_end - self.span_start)
            self._series[cache_key] = s
            if len(self._series) > 256:
                self._series.popitem(last=False)
        return s

    def statements(self, account: Account, now: int) -> list[Statement]:
        """One statement per calendar month of the span, available once the month has ended."""
        now_date = (EPOCH + dt.timedelta(days=now // DAY)) if now >= 0 else EPOCH
        out: list[Statement] = []
        year, month = self.start_date.year, self.start_date.month
        while True:
            last = dt.date(year, month, calendar.monthrange(year, month)[1])
            if last >= now_date:
                break
            first = max(dt.date(year, month, 1), self.start_date)
            sid = f"{account.account_id}-st-{year}{month:02d}"
            out.append(Statement(sid, account.account_id, year, month, last, first))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return out

    def statement_json(self, st: Statement, base_path: str) -> dict[str, Any]:
        href = f"{base_path}/accounts/{st.account_id}/statements/{st.statement_id}"
        return {
            "accountId": st.account_id,
            "statementId": st.statement_id,
            "statementDate": st.statement_date.isoformat(),
            "description": f"{st.month_name} statement",
            "links": [{"href": href, "rel": "self", "action": "GET", "types": ["application/pdf"]}],
            "status": "AVAILABLE",
        }


# --------------------------------------------------------------------------------------------
# Lazy transactions
# --------------------------------------------------------------------------------------------


class TxnSeries:
    """Transactions of one account, generated on demand.

    ``n`` transactions post inside the span ``[start, start + span)``; the index space continues
    past the span at the same rate (the future: they appear when the bank clock ``now`` advances).
    Posting time of ``i`` is ``start + floor((i + u_i) * step)`` with ``u_i`` in [0, 1): non-decreasing
    in ``i``. About 5% of transactions post 1-3 days after their transaction date; while the bank
    clock is between the two they are served as PENDING under another id and amount. Deposit and
    card accounts always have one such authorization (index ``n``) at the default clock.
    """

    def __init__(self, account: Account, n: int, start: int, span: int) -> None:
        self.account = account
        self.n = n
        self.start = start
        self.step = span / n if n > 0 else 0.0
        self.key = account.key
        self.forced_pending = n if account.kind in ("deposit", "loc") and n > 0 else -1
        tip_profiles = [i for i, p in enumerate(account.profiles) if p.tip]
        self.forced_profile = tip_profiles[-1] if tip_profiles else 0
        self._pending_cache: OrderedDict[int, list[int]] = OrderedDict()

    # -- hashing / timing ---------------------------------------------------------------------

    def _h1(self, i: int) -> int:
        return mix64((self.key + i * GAMMA) & M64)

    def _posted(self, i: int, h1: int) -> int:
        jitter = (h1 & 0xFFFF) / 65536.0 * self.step
        if i == self.forced_pending:  # post within 12 h after the span: pending at the default clock
            jitter = min(jitter, DAY / 2)
        return self.start + int(i * self.step + jitter)

    def posted_at(self, i: int) -> int:
        return self._posted(i, self._h1(i))

    def _delay_days(self, i: int, h1: int) -> int:
        if i == self.forced_pending:
            return 2
        if ((h1 >> 16) & 0xFF) < 13:  # ~5%
            return 1 + (h1 >> 24) % MAX_DELAY_DAYS
        return 0

    def _transacted_at(self, posted: int, delay: int, h1: int) -> int:
        r = (h1 >> 26) & 0xFFFFF
        if delay == 0:
            return posted - min(r % 3600, posted % DAY)
        day = posted // DAY - delay
        return day * DAY + 8 * 3600 + r % (14 * 3600)

    def count_posted_le(self, t: int) -> int:
        """How many transactions have a posting time <= t."""
        if self.n <= 0 or t < self.start:
            return 0
        hi = int((t - self.start) / self.step) + 2
        while self.posted_at(hi) <= t:
            hi += max(1, hi)
        return bisect_right(range(hi + 1), t, key=self.posted_at)

    def pending_indices(self, now: int) -> list[int]:
        """Indices whose transaction time is <= now but whose posting time is after now."""
        cached = self._pending_cache.get(now)
        if cached is not None:
            return cached
        out: list[int] = []
        if self.n > 0:
            lo = self.count_posted_le(now)
            hi = self.count_posted_le(now + (MAX_DELAY_DAYS + 1) * DAY)
            for i in range(lo, hi):
                h1 = self._h1(i)
                if self._transacted_at(self._posted(i, h1), self._delay_days(i, h1), h1) <= now:
                    out.append(i)
        self._pending_cache[now] = out
        if len(self._pending_cache) > 16:
            self._pending_cache.popitem(last=False)
        return out

    def transacted_at(self, i: int) -> int:
        h1 = self._h1(i)
        return self._transacted_at(self._posted(i, h1), self._delay_days(i, h1), h1)

    # -- windows ------------------------------------------------------------------------------

    def window(self, now: int, start: int | None, end: int | None) -> Window:
        """Visible transactions at ``now`` whose posted date is in [start, end] (epoch seconds,
        inclusive; pending ones filtered on their transaction date)."""
        lo = self.count_posted_le(start - 1) if start is not None else 0
        upper = now if end is None else min(end, now)
        hi = max(lo, self.count_posted_le(upper))
        pending = self.pending_indices(now)
        if start is not None or end is not None:
            s = start if start is not None else -(1 << 62)
            e = end if end is not None else 1 << 62
            pending = [i for i in pending if s <= self.transacted_at(i) <= e]
        return Window(self, lo, hi, pending)

    # -- records ------------------------------------------------------------------------------

    def record(self, i: int, pending: bool) -> dict[str, Any]:
        """Transaction ``i`` as an (unwrapped) FDX transaction."""
        acct = self.account
        h1 = self._h1(i)
        h2 = mix64(h1 ^ 0x5DEECE66D)
        posted = self._posted(i, h1)
        delay = self._delay_days(i, h1)
        transacted = self._transacted_at(posted, delay, h1)
        if i == self.forced_pending:
            p = acct.profiles[self.forced_profile]
        else:
            p = acct.profiles[acct.slots[(h2 & 0xFFFF) % len(acct.slots)]]
        span = (p.hi - p.lo) // p.step + 1
        cents = p.lo + ((h2 >> 16) % span) * p.step
        txid = f"{acct.account_id[4:]}-{i:08d}"
        rec: dict[str, Any] = {"accountId": acct.account_id, "transactionId": txid}
        if not pending:
            rec["postedTimestamp"] = iso_ts(posted)
        rec["transactionTimestamp"] = iso_ts(transacted)
        num = str((h2 >> 40) % 100000).zfill(5)
        desc = p.description
        extra: dict[str, Any] = {}
        if p.trade is not None:
            symbol, isin, _name, htype, price = SECURITIES[(h2 >> 36) % len(SECURITIES)]
            desc = desc.replace("{sym}", symbol)
            extra = {"symbol": symbol, "securityId": isin, "securityIdType": "ISIN"}
            if p.trade in ("buy", "sell"):
                units = 1 + (h2 >> 20) % 100
                unit_price = price * (90 + (h2 >> 28) % 21) // 100
                fees = 995 if (h2 >> 50) & 1 else 0
                gross = units * unit_price
                cents = gross + fees if p.trade == "buy" else gross - fees
                extra.update(
                    securityType="STOCK" if htype == "STOCK" else "MUTUALFUND",
                    units=units,
                    unitPrice=money(unit_price),
                    unitType="SHARES",
                    fees=money(fees),
                )
            else:
                extra["fees"] = 0.0
        elif acct.kind == "investment":
            extra["fees"] = 0.0
        if "{n}" in desc:
            desc = desc.replace("{n}", num)
        if p.check:
            check_no = 100 + (i % 900)
            desc = desc.replace("{c}", str(check_no))
            extra["checkNumber"] = check_no
        rec["description"] = desc
        rec["debitCreditMemo"] = p.dcm
        rec["status"] = "PENDING" if pending else "POSTED"
        if delay and p.tip:
            tip = max(1, cents * (5 + (h2 >> 56) % 16) // 100)
            auth = max(1, cents - tip)
        elif delay:
            auth = max(1, cents - (1 + (h2 >> 56) % 300))
        else:
            auth = cents
        rec["amount"] = money(auth if pending else cents)
        rec["category"] = p.category
        rec["reference"] = f"REF{(h1 >> 20) & 0xFFFFFFFFFF:012d}"
        if p.memo:
            rec["memo"] = p.memo
        if p.payee and acct.kind == "deposit":
            rec["payee"] = p.payee
        if p.txn_type is not None:
            rec["transactionType"] = p.txn_type
        if pending:
            rec["transactionId"] = PENDING_PREFIX + txid
        elif delay:
            rec["referenceTransactionId"] = PENDING_PREFIX + txid
        if extra:
            rec.update(extra)
        return rec


@dataclass
class Window:
    """A filtered, ordered view: posted indices [lo, hi) then the pending indices."""

    series: TxnSeries
    lo: int
    hi: int
    pending: list[int]

    @property
    def total(self) -> int:
        return (self.hi - self.lo) + len(self.pending)

    def slice(self, offset: int, limit: int) -> Iterator[dict[str, Any]]:
        n_posted = self.hi - self.lo
        record = self.series.record
        end = min(self.total, offset + limit)
        for j in range(offset, end):
            if j < n_posted:
                yield record(self.lo + j, False)
            else:
                yield record(self.pending[j - n_posted], True)
