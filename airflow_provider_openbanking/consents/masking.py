"""Keep tokens out of logs at a cost that does not grow with the number of consents.

Airflow's secrets masker recompiles one regular expression over *every* registered secret on each
``mask_secret`` call (and runs it over every log line): a process that handles 10,000 consents and
registers each token would slow down quadratically (126 ms per add at 1,000 secrets, measured).
:class:`TokenRedactor` keeps tokens in a set instead. Redacting a text scans it once for
token-shaped runs (``[A-Za-z0-9._~+/-]`` of 12+ characters, optional ``=`` padding) and replaces
the runs that are registered tokens: O(length of the text), whatever the number of tokens; adding
one is O(1). Secrets of any other shape (rare) are kept in a short list scanned as substrings.

The provider registers every customer token here (refresh, access, authorization codes) and uses
it for every error message it builds; :func:`install` also puts it as a filter on the root
logger's handlers so a record that some library logs is redacted too. The client secret, one per
connection, still goes to Airflow's masker as well.
"""

from __future__ import annotations

import logging
import re
import threading

_RUN = re.compile(r"[A-Za-z0-9._~+/-]{12,}={0,2}")
_STRIP = "._~+/-"
_MIN_LENGTH = 6
MASK = "***"


class TokenRedactor(logging.Filter):
    """A set of secrets and a linear-time :meth:`redact` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._tokens: set[str] = set()
        self._odd: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens) + len(self._odd)

    def add(self, secret: str | None) -> None:
        """Register a secret (O(1)); too-short ones (< 6 characters) are ignored."""
        if not secret or len(secret) < _MIN_LENGTH:
            return
        if secret in self._tokens:
            return
        with self._lock:
            if _RUN.fullmatch(secret):
                self._tokens.add(secret)
            elif secret not in self._odd:
                self._odd.append(secret)

    def discard(self, secret: str | None) -> None:
        with self._lock:
            self._tokens.discard(secret or "")
            if secret in self._odd:
                self._odd.remove(secret)

    def _replace(self, match: re.Match[str]) -> str:
        run = match.group()
        if run in self._tokens:
            return MASK
        trimmed = run.rstrip("=").rstrip(_STRIP)
        if trimmed != run and trimmed in self._tokens:
            return MASK + run[len(trimmed) :]
        return run

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        if not text or (not self._tokens and not self._odd):
            return text
        if self._tokens:
            text = _RUN.sub(self._replace, text)
        for secret in self._odd:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Logging filter: redact the formatted message (and drop the args it was built from)."""
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - a broken record is the logger's problem
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


#: The process-wide redactor every hook registers its customer tokens with.
REDACTOR = TokenRedactor()
_installed_on: set[int] = set()


def install() -> None:
    """Attach :data:`REDACTOR` to the root logger's handlers (idempotent, cheap to call often)."""
    for handler in logging.getLogger().handlers:
        if id(handler) not in _installed_on:
            handler.addFilter(REDACTOR)
            _installed_on.add(id(handler))


__all__ = ["MASK", "REDACTOR", "TokenRedactor", "install"]
