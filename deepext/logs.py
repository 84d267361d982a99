"""Process logging: plain text (the default) or one JSON object per line, for a log shipper.

`configure_logging(settings.log_format)` is called where a process starts (`deepext up`, an API
replica, a job's entry point); nothing is configured at import. A JSON line carries `time`, `level`,
`logger`, `message`, and when known `request_id`, `user`, `project`, `job_id`; an exception is one
`exception` field (its traceback with escaped newlines), so a line is always one record.

Context fields come from two places: fields of the whole process (`configure_logging(fields=...)`,
e.g. a job's id, seen by every thread) and fields bound for a block of code (`bind(...)`, a
contextvar, e.g. one API request - the API binds a function, so a user known only after
authentication still appears in its later lines).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]
CONTEXT_FIELDS = ("request_id", "user", "project", "job_id")
FieldSource = Mapping[str, Any] | Callable[[], Mapping[str, Any]]

_bound: contextvars.ContextVar[tuple[FieldSource, ...]] = contextvars.ContextVar("deepext_log_fields", default=())
_installed: logging.Handler | None = None  # the root handler configure_logging put there


@contextlib.contextmanager
def bind(fields: FieldSource) -> Iterator[None]:
    """Add `fields` (or what a function returns at each log call) to the lines logged in this block."""
    token = push(fields)
    try:
        yield
    finally:
        unbind(token)


def push(fields: FieldSource) -> contextvars.Token[tuple[FieldSource, ...]]:
    """`bind` without a block: the fields stay until `unbind(token)` or the end of the task."""
    return _bound.set((*_bound.get(), fields))


def unbind(token: contextvars.Token[tuple[FieldSource, ...]]) -> None:
    _bound.reset(token)


class ContextFilter(logging.Filter):
    """Puts the process fields and the bound fields on each record (a record's own `extra=` wins)."""

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def filter(self, record: logging.LogRecord) -> bool:
        merged = dict(self.fields)
        for source in _bound.get():
            merged.update(source() if callable(source) else source)
        for key, value in merged.items():
            if value is not None and not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            if (value := getattr(record, key, None)) is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual `time level logger: message`, with the context fields in brackets when present."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        context = [f"{key}={value}" for key in CONTEXT_FIELDS if (value := getattr(record, key, None)) is not None]
        return f"{text} [{' '.join(context)}]" if context else text


def make_handler(
    log_format: LogFormat, *, fields: Mapping[str, Any] | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """A stream handler in `log_format` that adds the context fields. By default it writes to the
    process's own stderr (`sys.__stderr__`): a Ray Serve replica swaps `sys.stderr` for a stream into
    its WARNING-level Serve logger, which would drop INFO lines and wrap the others."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format {log_format!r}: one of text, json")
    handler = logging.StreamHandler(stream or sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter(fields))
    return handler


def configure_logging(
    log_format: LogFormat, *, fields: Mapping[str, Any] | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Make this process log in `log_format`: deepext's loggers at INFO, libraries' at WARNING.

    For a process's entry point only: the root logger's handlers are replaced (as
    `logging.basicConfig(force=True)` does), so a second call reconfigures instead of doubling lines.
    """
    global _installed
    _settle_ray_llm_logging()
    handler = make_handler(log_format, fields=fields, stream=stream)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("deepext").setLevel(logging.INFO)
    _installed = handler
    return handler


def _settle_ray_llm_logging() -> None:
    """Ray Serve LLM's package replaces the root logger's handlers (Ray's JSON, INFO) when it is
    first imported, which the API's routes do: in a process using Ray Serve, import it first so it
    cannot undo `configure_logging` later (cheap once `ray.serve` is loaded)."""
    if "ray.serve" in sys.modules:
        with contextlib.suppress(ImportError):
            importlib.import_module("ray.llm._internal.serve")


def reclaim_root_logger() -> None:
    """Undo what `ray.init(logging_config=...)` did to this process's root logger (it adds its own
    handler and lowers the level), so a process configured here does not log every line twice."""
    root = logging.getLogger()
    if _installed is None or _installed not in root.handlers:
        return
    for other in [h for h in root.handlers if h is not _installed]:
        root.removeHandler(other)
    root.setLevel(logging.WARNING)


def ray_logging_config(log_format: LogFormat) -> Any:
    """Ray's own JSON logging for the job's tasks and actors when `log_format` is json, else None."""
    if log_format != "json":
        return None
    import ray

    return ray.LoggingConfig(encoding="JSON", log_level="INFO")
