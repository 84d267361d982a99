"""Usage accounting: one `usage_events` row per call through the /v1 gateway or a deployment's
direct endpoint - to a deployment or a provider, streamed or not, answered or failed - and reports
over them grouped by model, provider, user or day.

A call is measured by a `UsageMeter` from the moment its target is known (calls refused before -
a bad body, an unknown model, no right to use it - are in the audit log, not here); `record_call`
writes its row and, for a deployment that answered, adds to the model version's usage counters;
a `UsageWriter` does the same for many calls at a time.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import String, case, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from deepext import metrics
from deepext.db.models import Provider, UsageEvent, utcnow
from deepext.errors import InvalidInput
from deepext.models.versions import add_usage
from deepext.platform import Platform
from deepext.projects import get_project
from deepext.serve.sse import carries_text, last_usage, renamed, without_usage_chunks

log = logging.getLogger("deepext.usage")
Grouping = Literal["model", "provider", "user", "day"]
GROUPINGS: tuple[Grouping, ...] = ("model", "provider", "user", "day")
DEFAULT_DAYS = 30


@dataclass
class UsageMeter:
    """One gateway call being measured: who called what, how long it took, what it used."""

    project_id: int
    actor: str
    token_id: int | None
    target_kind: Literal["deployment", "provider"]
    model: str  # the public name the client called
    endpoint: str  # chat | completions
    stream: bool
    model_version_id: int | None = None
    provider_id: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: int | None = None
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None  # set when the call is queued for writing; the latency ends there

    def first_token(self) -> None:
        """Mark the first token sent to the client (once)."""
        if self.ttft_ms is None:
            self.ttft_ms = self._elapsed_ms()

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        """Take the token counts of an OpenAI `usage` object (the last one seen wins)."""
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def fail(self, error: str) -> None:
        """Mark the call failed (the first reason wins)."""
        if self.error is None:
            self.error = error[:2000]

    def end(self) -> None:
        if self.ended is None:
            self.ended = time.perf_counter()

    def _elapsed_ms(self) -> int:
        return round(((self.ended or time.perf_counter()) - self.started) * 1000)

    def row(self) -> UsageEvent:
        return UsageEvent(
            at=utcnow(),
            project_id=self.project_id,
            actor=self.actor,
            token_id=self.token_id,
            target_kind=self.target_kind,
            model_version_id=self.model_version_id,
            provider_id=self.provider_id,
            model=self.model[:255],
            endpoint=self.endpoint,
            stream=self.stream,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=self._elapsed_ms(),
            ttft_ms=self.ttft_ms if self.stream else None,
            status="ok" if self.error is None else "error",
            error=self.error.replace("\x00", "\\x00") if self.error else None,
        )


def metered_events(events: str, meter: UsageMeter, engine_model: str, public_name: str, wants_usage: bool) -> str:
    """A piece of an engine's stream as the client gets it: the engine's model id renamed, the
    first token and the usage put on the meter, the usage chunk (always asked for) kept only if
    the client asked for it."""
    events = renamed(events, engine_model, public_name)
    if meter.ttft_ms is None and carries_text(events):
        meter.first_token()
    if '"usage":{' in events:
        meter.add_usage(last_usage(events))
        if not wants_usage:
            events = without_usage_chunks(events)
    return events


def record_call(platform: Platform, meter: UsageMeter) -> None:
    """Write the call's usage event now."""
    write_calls(platform, [meter])


def write_calls(platform: Platform, meters: list[UsageMeter]) -> None:
    """The calls' usage events in one transaction; deployments that answered also count on their
    model versions (one update per version). The calls also count in the exported metrics
    (`deepext.metrics`, inside Ray only)."""
    counts: dict[int, tuple[int, int]] = {}
    with platform.db.session() as session:
        for meter in meters:
            metrics.record_model_call(
                meter.model, meter.target_kind, meter.error is None, meter.prompt_tokens, meter.completion_tokens
            )
            session.add(meter.row())
            if meter.target_kind == "deployment" and meter.error is None and meter.model_version_id is not None:
                requests, tokens = counts.get(meter.model_version_id, (0, 0))
                tokens += meter.prompt_tokens + meter.completion_tokens
                counts[meter.model_version_id] = (requests + 1, tokens)
        for version_id, (requests, tokens) in counts.items():
            add_usage(session, version_id, requests=requests, tokens=tokens)


class UsageWriter:
    """Usage events written in batches by a thread of its own: one transaction every `interval`
    for all the calls that ended in it. A transaction per call (an insert, an update of the model
    version, a commit) cost about 2 ms of the serving replica's CPU, a third of what a short
    streamed chat costs it at a direct endpoint (docs/serving.md). A call is in the database
    within `interval` of its end; calls queued when the process is killed are lost."""

    def __init__(self, platform: Platform, interval: float = 0.5) -> None:
        self.platform, self.interval = platform, interval
        self._queue: list[UsageMeter] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deepext-usage-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def add(self, meter: UsageMeter) -> None:
        meter.end()
        with self._lock:
            self._queue.append(meter)

    def flush(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        if batch:
            try:
                write_calls(self.platform, batch)
            except Exception:  # the database is away: the calls are served, their usage is lost
                log.exception("could not record the usage of %d calls", len(batch))

    def close(self) -> None:
        """Stop, after writing what is queued."""
        self._closed.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._closed.wait(self.interval):
            self.flush()
        self.flush()


def record_call_soon(platform: Platform, meter: UsageMeter) -> None:
    """`record_call` on a worker thread without waiting: for a stream the client closed, whose
    task is being cancelled and cannot await anything any more."""
    try:
        future = asyncio.get_running_loop().run_in_executor(None, record_call, platform, meter)
    except RuntimeError:  # no loop running any more (a generator finalized late): a thread of its own
        threading.Thread(target=record_call, args=(platform, meter), daemon=True).start()
        return
    future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record a usage event", exc_info=future.exception())


# ---- reports
@dataclass(frozen=True)
class UsageRow:
    """Totals of one group (the grouping keys not asked for are None)."""

    model: str | None
    provider: str | None  # a provider's name; None for the project's deployments
    user: str | None
    day: str | None  # YYYY-MM-DD, UTC
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    avg_latency_ms: float | None
    avg_ttft_ms: float | None  # streams only


@dataclass(frozen=True)
class UsageReport:
    project: str
    since: str
    until: str
    group_by: list[str]
    rows: list[UsageRow]


def _day(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", UsageEvent.at), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", UsageEvent.at)  # SQLite keeps the UTC time as text


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def usage_report(
    platform: Platform,
    project: str,
    *,
    group_by: list[Grouping],
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 1000,
) -> UsageReport:
    """The project's usage in [since, until) (default: the last 30 days), one row per group, in key
    order; no grouping: one row of totals. Times without a zone are UTC."""
    unknown = [g for g in group_by if g not in GROUPINGS]
    if unknown:
        raise InvalidInput(f"group_by {unknown[0]!r}: one of {', '.join(GROUPINGS)}", field="group_by")
    group_by = list(dict.fromkeys(group_by))
    try:
        until = _utc(until) if until is not None else utcnow()
        since = _utc(since) if since is not None else until - dt.timedelta(days=DEFAULT_DAYS)
    except OverflowError as exc:
        raise InvalidInput(f"since/until out of range: {exc}", field="since") from exc
    if since >= until:
        raise InvalidInput("since must be before until", field="since")
    with platform.db.session() as session:
        owner = get_project(session, project)
        # The keys are computed in a subquery and grouped by name outside it: PostgreSQL would not
        # match an expression with bound parameters (the day's format) in GROUP BY to the SELECT's.
        provider = case(  # a deleted provider's events: `#ID`; the project's deployments: None
            (
                UsageEvent.target_kind == "provider",
                func.coalesce(Provider.name, "#" + cast(UsageEvent.provider_id, String)),
            ),
            else_=None,
        )
        keys: dict[str, ColumnElement[Any] | InstrumentedAttribute[Any]] = {
            "model": UsageEvent.model,
            "provider": provider,
            "user": UsageEvent.actor,
            "day": _day(session.get_bind().dialect.name),
        }
        events = (
            select(
                *(keys[g].label(g) for g in group_by),
                UsageEvent.status,
                UsageEvent.prompt_tokens,
                UsageEvent.completion_tokens,
                UsageEvent.latency_ms,
                UsageEvent.ttft_ms,
            )
            .outerjoin(Provider, Provider.id == UsageEvent.provider_id)
            .where(UsageEvent.project_id == owner.id, UsageEvent.at >= since, UsageEvent.at < until)
            .subquery()
        )
        chosen = [events.c[g] for g in group_by]
        query = select(
            *chosen,
            func.count().label("requests"),
            func.coalesce(func.sum(case((events.c.status == "error", 1), else_=0)), 0).label("errors"),
            func.coalesce(func.sum(events.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(events.c.completion_tokens), 0).label("completion_tokens"),
            func.avg(events.c.latency_ms).label("avg_latency_ms"),
            func.avg(events.c.ttft_ms).label("avg_ttft_ms"),
        )
        if chosen:
            query = query.group_by(*chosen).order_by(*chosen)
        results = session.execute(query.limit(limit)).mappings().all()
    rows = [
        UsageRow(
            model=result.get("model"),
            provider=result.get("provider"),
            user=result.get("user"),
            day=result.get("day"),
            requests=int(result["requests"]),
            errors=int(result["errors"]),
            prompt_tokens=int(result["prompt_tokens"]),
            completion_tokens=int(result["completion_tokens"]),
            total_tokens=int(result["prompt_tokens"]) + int(result["completion_tokens"]),
            avg_latency_ms=_rounded(result["avg_latency_ms"]),
            avg_ttft_ms=_rounded(result["avg_ttft_ms"]),
        )
        for result in results
        if int(result["requests"]) > 0
    ]
    return UsageReport(project, since.isoformat(), until.isoformat(), list(group_by), rows)


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)
