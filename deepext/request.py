"""The HTTP request that domain code runs in, if any: bound by the API for each request so domain
functions stay unaware of HTTP while their audit rows name the request, token and client address,
and their project lookups see only the projects the caller may read."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class RequestContext:
    request_id: str
    client_addr: str | None = None
    token_id: int | None = None
    readable_project_ids: frozenset[int] | None = None  # None: no limit (admins, or before auth)
    audit_rows: int = 0  # audit rows written during the request


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("deepext_request", default=None)


@contextlib.contextmanager
def bind(context: RequestContext) -> Iterator[RequestContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current() -> RequestContext | None:
    return _current.get()
