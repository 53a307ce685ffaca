"""What can go wrong, as exceptions that carry the broker's JSON error code.

Catch ``BrokerError`` for all of them; the subclasses follow the HTTP status, so a caller can
tell "fix the request" from "try later" from "sign in again" without reading codes.

``RunFailedError`` and ``StreamEndedError`` were once called ``RunFailed`` and ``StreamError``,
the names of two event structs of ``broker.core.events``; the old names stay as aliases, so
code written against them keeps working.
"""

from __future__ import annotations


class BrokerError(Exception):
    """An answer of the broker that is not a success, or no answer at all (``status`` 0)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if status == 0 else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BadRequest(BrokerError):
    """400, 413 or 422: the request itself is wrong (id, body, model, params)."""


class Unauthorized(BrokerError):
    """401: no token, or one the broker does not accept."""


class TokenExpired(Unauthorized):
    """An open stream's token expired: get a new token and resume from ``last_event_id``."""

    def __init__(self, message: str, last_event_id: str | None) -> None:
        super().__init__(401, "token_expired", message)
        self.last_event_id = last_event_id


class Forbidden(BrokerError):
    """403: this token may read the conversation but not change it."""


class NotFound(BrokerError):
    """404: no such conversation or run (or not one this token may see)."""


class Conflict(BrokerError):
    """409: ``run_active`` (a run is still going) or ``no_active_run``."""


class RateLimited(BrokerError):
    """429: too many requests, streams or runs; ``retry_after`` says when to try again."""


class ServerError(BrokerError):
    """5xx: the broker could not serve the request now (for example Redis is unreachable)."""


class BrokerUnavailable(BrokerError):
    """Nothing answered: the broker is down or unreachable at this URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, "unreachable", f"no broker answers at {url} ({reason})")
        self.url = url
        self.reason = reason


class ReconnectFailed(BrokerError):
    """A stream could not be resumed within the allowed attempts; resume later from
    ``last_event_id``. The last failure is the ``__cause__``."""

    def __init__(self, attempts: int, last_event_id: str | None, reason: str) -> None:
        super().__init__(0, "reconnect_failed", f"gave up after {attempts} attempts: {reason}")
        self.attempts = attempts
        self.last_event_id = last_event_id


class StreamEndedError(BrokerError):
    """The broker ended a stream with an ``error`` event other than ``token_expired``."""


class RunFailedError(BrokerError):
    """The run this call followed ended with ``run.failed``; ``code`` is the run's error code."""

    def __init__(self, run_id: str, code: str, message: str) -> None:
        super().__init__(0, code, message)
        self.run_id = run_id


# The former names, kept for compatibility (see the module's docstring).
StreamError = StreamEndedError
RunFailed = RunFailedError


_BY_STATUS: dict[int, type[BrokerError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    422: BadRequest,
    429: RateLimited,
}


def error_for(status: int, code: str, message: str, retry_after: float | None) -> BrokerError:
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else BrokerError)
    return cls(status, code, message, retry_after)
