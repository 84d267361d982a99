"""One module per page of the web app, each with a `build(engine, session) -> Page`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Page:
    """What the app needs from a built page: how to reload it for the session (after login, a project
    change) - a callback `(session) -> (session, status, *outputs)` - and the components it fills."""

    refresh: Callable[..., Any]
    outputs: list[Any] = field(default_factory=list)
