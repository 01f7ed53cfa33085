"""FDX pagination: follow ``page.nextOffset`` (or ``links.next.href``) lazily, one page at a time.

Only one page is ever held in memory, so a million transactions cost what one page costs. A
server that hands back an offset it already gave (a loop) is stopped with a clear error instead of
being followed forever, and so is one that keeps handing out new offsets: a walk ends after
``max_pages`` pages (connection extra ``max_pages``, default :data:`DEFAULT_MAX_PAGES`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_openbanking.exceptions import MalformedResponseError, PaginationError

#: Pages one walk may take before it is stopped: 100,000 pages of 100 records is ten million
#: records, far beyond any one account's history, so only a server that never stops ends there.
DEFAULT_MAX_PAGES = 100_000


class PageLimitError(PaginationError, AirflowFailException):
    """A walk reached ``max_pages`` and the server still offered a next page.

    An ``AirflowFailException``: a retry would walk the same endless chain again. Either the server
    is broken or the data is larger than the bound; the message says which extra to raise.
    """


@dataclass
class PageStats:
    """Counts kept while paginating, readable by the caller after (or during) iteration."""

    pages: int = 0
    records: int = 0
    total_elements: int | None = None
    offsets: list[str] = field(default_factory=list)
    dropped: int = 0
    """Records the hook left out because the server sent what was not asked for (another
    account, a date outside the window): see the hook's data methods."""


def next_params(body: Mapping[str, Any]) -> dict[str, str] | None:
    """Query parameters of the next page, or None when this was the last one.

    ``page.nextOffset`` wins; otherwise the query string of ``links.next.href`` is used (some
    servers give only the link). The link's path is ignored on purpose: the request always goes to
    the endpoint the caller asked for, so a server cannot redirect the client elsewhere.
    """
    page = body.get("page")
    if isinstance(page, Mapping):
        offset = page.get("nextOffset")
        if offset not in (None, ""):
            return {"offset": str(offset)}
    links = body.get("links")
    if isinstance(links, Mapping):
        nxt = links.get("next")
        href = nxt.get("href") if isinstance(nxt, Mapping) else None
        if isinstance(href, str) and href:
            query = dict(parse_qsl(urlsplit(href).query, keep_blank_values=True))
            if query:
                return query
    return None


def paginate(
    fetch: Callable[[dict[str, str]], Any],
    key: str,
    *,
    endpoint: str,
    params: Mapping[str, Any] | None = None,
    stats: PageStats | None = None,
    on_page: Callable[[PageStats], None] | None = None,
    max_pages: int | None = DEFAULT_MAX_PAGES,
) -> Iterator[Any]:
    """Yield the items under ``key`` of every page, fetching the next page only when needed.

    ``fetch(params)`` returns one decoded page. ``stats`` (if given) is updated as pages arrive
    and ``on_page`` is called after each one (progress logging). After ``max_pages`` pages
    (``None``: no bound) a further next page raises :class:`PageLimitError`.
    """
    if max_pages is not None and max_pages < 1:
        raise ValueError(f"max_pages must be at least 1, got {max_pages!r}")
    walked = 0
    stats = stats if stats is not None else PageStats()
    base = {k: str(v) for k, v in (params or {}).items() if v is not None}
    query = dict(base)
    seen: set[tuple[tuple[str, str], ...]] = set()
    while True:
        body = fetch(query)
        if body is None:
            return
        if not isinstance(body, Mapping):
            raise MalformedResponseError(
                endpoint, 200, None, f"expected a JSON object, got {type(body).__name__}"
            )
        items = body.get(key, [])
        if items is None:
            items = []
        if not isinstance(items, list):
            raise MalformedResponseError(
                endpoint, 200, None, f"{key!r} is {type(items).__name__}, not a list"
            )
        walked += 1
        stats.pages += 1
        stats.records += len(items)
        page = body.get("page")
        if isinstance(page, Mapping):
            total = page.get("totalElements", page.get("total"))
            if isinstance(total, int):
                stats.total_elements = total
        if on_page is not None:
            on_page(stats)
        yield from items
        nxt = next_params(body)
        if nxt is None:
            return
        marker = tuple(sorted(nxt.items()))
        if marker in seen or nxt == {k: v for k, v in query.items() if k in nxt}:
            raise PaginationError(
                f"{endpoint}: the server returned the same next page ({', '.join(f'{k}={v}' for k, v in marker)}) "
                f"twice after {stats.pages} page(s); stopping instead of looping forever"
            )
        if max_pages is not None and walked >= max_pages:
            raise PageLimitError(
                f"{endpoint}: still another page after {walked} page(s) ({stats.records} record(s)), "
                f"the bound set by the connection extra max_pages={max_pages}; the server keeps "
                "handing out new offsets. If the data really is that large, raise max_pages"
            )
        seen.add(marker)
        if "offset" in nxt:
            stats.offsets.append(nxt["offset"])
        query = {**base, **nxt}
