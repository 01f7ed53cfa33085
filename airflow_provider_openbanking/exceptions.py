"""Errors raised by the provider.

Every error that comes from the API names the endpoint, the HTTP status, the FDX ``code`` and
``message`` and the ``ob-correlation-id`` / ``ob-trace-id`` headers, because that is what Flinks
support asks for. None of them ever carries a secret: messages are built from the response's error
fields only, and the hook redacts any secret it knows before raising.

The hierarchy tells a caller what to do:

- :class:`NotRetryableError` (an ``AirflowFailException``) is the base of every failure that
  retrying cannot fix, so the task fails at its first try instead of burning its retries:
  :class:`ConnectionConfigError` (a missing or malformed field, client id/secret refused),
  :class:`ConnectionNotFoundError`, :class:`LandingDestinationError` (the destination cannot be
  written), :class:`MapLengthError` (more mapped tasks than ``[core] max_map_length``) and
  :class:`ConsentRequiredError`.
- :class:`ConsentRequiredError`: the customer must authorize again (602, or a refresh token
  rejected).
- :class:`TransientApiError` is what the transport retries (rate limits, 5xx, dropped connections,
  garbled bodies); it only surfaces once the retry budget is spent.
- :class:`AccountUnavailableError` (704/705) lets operators skip one account and go on.
- :class:`ConnectionConfigError` says which connection field to fix.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException


class OpenBankingError(AirflowException):
    """Base class of every error raised by this provider."""


class NotRetryableError(OpenBankingError, AirflowFailException):
    """A failure that retrying cannot fix: the task fails at its first try, its retries unused.

    Transient faults (rate limits, 5xx, dropped connections) are *not* of this kind: they are
    retried by the transport and, once its budget is spent, by Airflow's task retries.
    """


class ConnectionConfigError(NotRetryableError):
    """A field of the ``openbanking`` connection is missing or malformed (or was refused)."""

    def __init__(self, conn_id: str, field: str, problem: str) -> None:
        self.conn_id = conn_id
        self.field = field
        super().__init__(f"Connection {conn_id!r}: field {field!r} {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.conn_id, self.field, self._problem()))

    def _problem(self) -> str:
        prefix = f"Connection {self.conn_id!r}: field {self.field!r} "
        text = str(self)
        return text[len(prefix) :] if text.startswith(prefix) else text


class ConnectionNotFoundError(ConnectionConfigError, AirflowNotFoundException):
    """No connection of that id exists anywhere Airflow looks (metadata DB, environment, secrets
    backends). Also an ``AirflowNotFoundException``, so code that catches Airflow's keeps working."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.field = "conn_id"
        env = "AIRFLOW_CONN_" + "".join(c if c.isalnum() else "_" for c in conn_id).upper()
        AirflowNotFoundException.__init__(
            self,
            f"Connection {conn_id!r} is not defined: create it with `airflow connections add {conn_id} "
            "--conn-type openbanking --conn-host <API base URL> --conn-login <client id> "
            f"--conn-password <client secret>`, in the UI (Admin > Connections), or as {env}",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.conn_id,))


class LandingDestinationError(NotRetryableError):
    """The landing destination cannot be written (checked with a probe before any API call)."""

    def __init__(self, destination: str, problem: str) -> None:
        self.destination = destination
        self.problem = problem
        super().__init__(
            f"The landing destination {destination} cannot be written: {problem}. Fix the operator's "
            "destination (or [openbanking] landing_destination) or its permissions/credentials; "
            "no API call was made"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.destination, self.problem))


class MapLengthError(NotRetryableError):
    """A task would be mapped over more items than Airflow allows (``[core] max_map_length``)."""

    def __init__(self, what: str, count: int, limit: int, hint: str | None = None) -> None:
        self.what = what
        self.count = count
        self.limit = limit
        self.hint = hint
        text = (
            f"{count} {what} to map over, more than [core] max_map_length = {limit}: raise "
            "AIRFLOW__CORE__MAX_MAP_LENGTH or split the work"
        )
        super().__init__(f"{text} ({hint})" if hint else text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.count, self.limit, self.hint))


class ApiError(OpenBankingError):
    """The API answered with an error.

    Attributes mirror the response so callers (and tests) can branch on them without parsing the
    message: ``endpoint`` (``"GET /api/fdx/5/accounts"``), ``status``, ``code`` (FDX code as a string,
    or the OAuth ``error``), ``api_message``, ``correlation_id``, ``trace_id``.
    """

    def __init__(
        self,
        endpoint: str,
        status: int | None,
        code: str | None = None,
        api_message: str | None = None,
        *,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.api_message = api_message
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.hint = hint
        self.retry_after = retry_after
        super().__init__(self._render())

    def recast(
        self, cls: type[ApiError] | None = None, *, api_message: str | None = None, hint: str | None = None
    ) -> ApiError:
        """The same response as another error class, or with another message or hint."""
        return (cls or type(self))(
            self.endpoint,
            self.status,
            self.code,
            self.api_message if api_message is None else api_message,
            correlation_id=self.correlation_id,
            trace_id=self.trace_id,
            hint=self.hint if hint is None else hint,
            retry_after=self.retry_after,
        )

    def _render(self) -> str:
        parts = [f"{self.endpoint} failed"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        text = ", ".join(parts)
        if self.api_message:
            text += f": {self.api_message}"
        if self.status is not None or self.correlation_id or self.trace_id:
            # Only a server that answered has correlation ids to quote (none when nothing answered).
            ids = [f"ob-correlation-id={self.correlation_id or '-'}", f"ob-trace-id={self.trace_id or '-'}"]
            text += f" ({', '.join(ids)})"
        if self.hint:
            text += f". {self.hint}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the attributes when the error crosses a process boundary (triggerer, executors).
        return (
            _rebuild,
            (
                type(self),
                {
                    "endpoint": self.endpoint,
                    "status": self.status,
                    "code": self.code,
                    "api_message": self.api_message,
                    "correlation_id": self.correlation_id,
                    "trace_id": self.trace_id,
                    "hint": self.hint,
                    "retry_after": self.retry_after,
                },
            ),
        )


def _rebuild(cls: type[ApiError], kwargs: dict[str, Any]) -> ApiError:
    endpoint = kwargs.pop("endpoint")
    status = kwargs.pop("status")
    return cls(endpoint, status, **kwargs)


class TransientApiError(ApiError):
    """Rate limited (1207), 5xx, maintenance, dropped connection, unparsable body: retried."""


class MalformedResponseError(TransientApiError):
    """The body is not the JSON the API promises (a proxy's HTML page, a truncated document)."""


class ResponseTooLargeError(ApiError):
    """The body is larger than the connection's ``max_response_bytes``: refused, not retried."""


class StatementProcessingError(TransientApiError):
    """400 code 1300: the statement is still being produced; try again later."""


class NoDataError(ApiError):
    """404 code 1107: no data for these parameters. Callers treat it as an empty result."""


class AccountUnavailableError(ApiError):
    """704 (account type not supported) or 705 (account closed): skip this account, say so."""


class AccessTokenRejectedError(ApiError):
    """401 that is not 602 even after a fresh access token: the client's credentials are wrong."""


class ConsentRequiredError(ApiError, NotRetryableError):
    """The customer's consent is gone (602, refresh token rejected or lapsed): not retryable.

    It is an ``AirflowFailException`` so a task fails at once instead of burning its retries; a
    DAG can wait for the customer with ``OpenBankingTokenSensor``.
    """

    DEFAULT_HINT = (
        "The customer must authorize again: run `airflow-openbanking authorize --conn-id <conn_id>` "
        "(or store a new refresh token in the connection)"
    )

    @classmethod
    def hint_for(cls, conn_id: str | None) -> str:
        """The re-authorization hint, naming the connection when it is known."""
        return cls.DEFAULT_HINT.replace("<conn_id>", conn_id or "<conn_id>")


class AuthorizationCallbackError(OpenBankingError):
    """The /authorize callback carried ``error=…`` or a ``state`` that does not match."""

    def __init__(self, message: str, *, error: str | None = None, description: str | None = None) -> None:
        self.error = error
        self.description = description
        super().__init__(message)


class PaginationError(OpenBankingError):
    """The server's pagination is broken (an offset repeated: it would loop forever)."""
