"""Domain errors. Each carries what the user needs to fix the problem; one handler per edge
(CLI, HTTP) turns them into output: Unauthenticated -> 401, Forbidden -> 403, NotFound -> 404,
Conflict -> 409, PayloadTooLarge -> 413, InvalidInput -> 422, RateLimited -> 429,
BadGateway -> 502, Unavailable -> 503, GatewayTimeout -> 504."""

from __future__ import annotations

from typing import Any


class DeepextError(Exception):
    """Base of every error the platform reports to a user."""


class NotFound(DeepextError):
    pass


class Forbidden(DeepextError):
    pass


class Unauthenticated(DeepextError):
    """No credentials, or credentials that are wrong, expired or revoked."""


class RateLimited(DeepextError):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PayloadTooLarge(DeepextError):
    pass


class Unavailable(DeepextError):
    """Something the request needs is not serving now (a model still deploying, a failed engine)."""


class Conflict(DeepextError):
    pass


class BadGateway(DeepextError):
    """An upstream service (an external model provider) failed or answered with an error of its own."""


class GatewayTimeout(DeepextError):
    """An upstream service (an external model provider) did not answer in time."""


class InvalidInput(DeepextError):
    """Bad input from a user: a config field, an argument, a file."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DatasetFormatError(InvalidInput):
    """A dataset file that cannot be ingested, with the file and 1-based row that broke it."""

    def __init__(self, file: str, row: int | None, reason: str) -> None:
        where = f"{file}, row {row}" if row is not None else file
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.row = row
        self.reason = reason


def invalid_config(what: str, exc: Any) -> InvalidInput:
    """A pydantic ValidationError as one InvalidInput listing every wrong field by its dotted path
    (`sampling.group_size: ...`); `field` is the first of them."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "config"
        problems.append(f"{where}: {error['msg']}")
    first = ".".join(str(part) for part in exc.errors()[0]["loc"])
    return InvalidInput(f"invalid {what}: " + "; ".join(problems), field=first or None)
