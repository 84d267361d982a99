"""What every page's callbacks share: a REST client per call with the user's session token, and one
place that turns API errors into what the user reads.

Page callbacks follow one convention so they stay plain, testable functions:

    def upload(session: UiSession, engine: Engine, file, name) -> tuple[str, ...]:  # (status, *outputs)

`Engine.action(handler, n)` wraps such a handler for Gradio as `(session, *inputs) -> (session, status,
*outputs)`: an `ApiError` becomes a readable status line (never a traceback) with the other outputs
left as they are, and a 401 returns an expired session, which sends the tab back to the login view.
Otherwise the session output is `gr.skip()`: a slow callback that finishes after the user logged out
(or in again) must not write back the session it started with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from apps.gradio.session import UiSession
from deepext.client import ApiError, DeepextClient


def error_text(exc: ApiError) -> str:
    """An API error as one readable Markdown line: the message, the field, the request id."""
    field = f" (field `{exc.field}`)" if exc.field else ""
    request = f" · request {exc.request_id}" if exc.request_id else ""
    message = exc.message or exc.code
    return f"**Error: {message}**{field}<br><small>HTTP {exc.status} {exc.code}{request}</small>"


def ok_text(message: str) -> str:
    return f"**Done:** {message}"


class Engine:
    """The UI's one way to the platform: the REST API at `api_url` (`http://host:port`)."""

    def __init__(self, api_url: str, *, timeout: float = 120.0) -> None:
        self.api_url = api_url.rstrip("/").removesuffix("/api/v1")
        self.timeout = timeout

    def client(self, session: UiSession | None = None) -> DeepextClient:
        """A client carrying the session's token; use it in a `with` block."""
        token = session.token if session is not None and session.signed_in else None
        return DeepextClient(self.api_url, token=token, timeout=self.timeout)

    def action(
        self, handler: Callable[..., tuple[Any, ...]], outputs: int, *, returns_session: bool = False
    ) -> Callable[..., tuple[Any, ...]]:
        """`handler(session, engine, *inputs) -> (status, *outputs)` as a Gradio callback
        `(session, *inputs) -> (session, status, *outputs)`; `outputs` counts the handler's values
        after the status. A handler that changes the session (`returns_session`) returns
        `(session, status, *outputs)` itself."""

        @functools.wraps(handler)
        def run(session: UiSession, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
            unchanged = tuple(gr.skip() for _ in range(outputs))
            if not session.signed_in:
                return (gr.skip(), gr.skip(), *unchanged)
            try:
                answer = handler(session, self, *args, **kwargs)
            except ApiError as exc:
                if exc.status == 401:
                    return (session.expired(), "", *unchanged)
                return (gr.skip(), error_text(exc), *unchanged)
            return tuple(answer) if returns_session else (gr.skip(), *answer)

        # Gradio reads the callback's signature (for `gr.Progress`): show it the inputs, not `engine`.
        run.__signature__ = _without_engine(handler)  # type: ignore[attr-defined]
        return run

    def stream(self, handler: Callable[..., Iterator[tuple[Any, ...]]], outputs: int) -> Callable[..., Any]:
        """`action` for a generator handler whose every step yields `(status, *outputs)`."""

        def run(session: UiSession, *args: Any) -> Iterator[tuple[Any, ...]]:
            unchanged = tuple(gr.skip() for _ in range(outputs))
            if not session.signed_in:
                yield (gr.skip(), gr.skip(), *unchanged)
                return
            try:
                for status, *values in handler(session, self, *args):
                    yield (gr.skip(), status, *values)
            except ApiError as exc:
                if exc.status == 401:
                    yield (session.expired(), "", *unchanged)
                else:
                    yield (gr.skip(), error_text(exc), *unchanged)

        run.__signature__ = _without_engine(handler)  # type: ignore[attr-defined]
        run.__name__ = handler.__name__
        return run


def _without_engine(handler: Callable[..., Any]) -> Any:
    import inspect

    signature = inspect.signature(handler)
    params = list(signature.parameters.values())
    return signature.replace(parameters=[params[0], *params[2:]])
