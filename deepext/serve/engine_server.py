"""`EngineServer`: Ray Serve LLM's `LLMServer` (a vLLM async engine in a Serve replica) taking and
returning plain JSON-shaped data, so the gateway in the API replica never imports vLLM.

vLLM's request and response types are pydantic models defined in vLLM. Had the gateway validated
requests into them, or received them back through the deployment handle (unpickling imports the
defining module), every API replica would import vLLM, torch and transformers: seconds of CPU on
the first chat request after a start, and their memory for good. Here the request is validated in
the replica that already runs vLLM, and what goes back is strings, dicts and lists. Imported only
where an engine is deployed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ray.llm._internal.serve.utils.batcher import Batcher
from ray.serve.llm.deployment import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from deepext.serve.sse import carries_text

T = TypeVar("T")
_SCHEMAS: dict[str, type[BaseModel]] = {"chat": ChatCompletionRequest, "completions": CompletionRequest}


def invalid_request(kind: str, exc: ValidationError) -> dict[str, Any]:
    """An OpenAI error object for a body vLLM's request model refuses (a 400 naming the body)."""
    message = f"invalid {kind} request: {exc}"
    return {"error": {"message": message, "type": "BadRequestError", "param": "body", "code": 400}}


def plain(item: Any) -> Any:
    """`item` (an SSE string, an error or whole-answer model, or a list of them) as JSON-shaped data."""
    if isinstance(item, list):
        return [plain(piece) for piece in item]
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json")
    return item


class FirstAtOnceBatcher(Batcher[T]):
    """Ray Serve LLM's stream batcher (at most one message per interval from the engine's replica,
    50 ms by default), except that each piece goes out as soon as it exists until one carrying
    generated text has gone out.

    Serve's own batcher waits a whole interval before its first message, so every stream's first
    token waited up to 50 ms in the replica (a time to first token of ~75 ms against vLLM's own
    ~15 ms, docs/serving.md). vLLM's first chat piece holds only the role; the first token follows
    in the next. The end of a stream goes out at once either way."""

    def __init__(self, generator: AsyncGenerator[T, None], interval_ms: float | None) -> None:
        self.arrived = asyncio.Event()  # set by read() on every piece and at the end
        super().__init__(generator, interval_ms)  # starts read()

    async def read(self) -> None:
        try:
            async for item in self.generator:
                self.queue.put_nowait(item)
                self.arrived.set()
        finally:
            self.done_event.set()
            self.arrived.set()

    async def stream(self) -> AsyncGenerator[list[T], None]:
        if not self.interval_s:  # no batching (0), or one batch of everything (None): Serve's way
            async for batch in super().stream():
                yield list(batch)
            return
        text_sent = False
        try:
            await self.arrived.wait()
            while True:
                self.arrived.clear()
                results, is_done = self.check_done_and_drain()
                if results:
                    yield results
                    text_sent = text_sent or any(isinstance(r, str) and carries_text(r) for r in results)
                if is_done:
                    self.read_task.result()
                    return
                if not text_sent:
                    await self.arrived.wait()
                    continue
                with contextlib.suppress(TimeoutError):  # the interval passed without the end
                    await asyncio.wait_for(self.done_event.wait(), timeout=self.interval_s)
        finally:
            if not self.read_task.done():
                self.read_task.cancel()


class EngineServer(LLMServer):
    """`call(kind, body)` runs a chat or completions request given as the OpenAI JSON body.

    It yields what `LLMServer.chat` / `completions` do, made plain: for a stream, lists of
    `data: ...` strings (an error dict may end one); otherwise the whole answer as a dict. A body
    vLLM refuses yields one error dict (`{"error": {...}}`) and nothing else.

    Deployed as an ingress (`direct` given: the platform's settings and the deployment's id), it
    also serves the deployment's direct endpoint over HTTP: vLLM's own OpenAI app behind
    `deepext.serve.direct.DirectGate`."""

    # An async constructor, as LLMServer's: Serve awaits it.
    async def __init__(self, llm_config: Any, *, direct: dict[str, Any] | None = None, **kwargs: Any) -> None:  # type: ignore[misc]
        self._direct = direct
        await super().__init__(llm_config, **kwargs)

    async def __serve_build_asgi_app__(self) -> Any:
        from deepext.serve.direct import gate

        app = await super().__serve_build_asgi_app__()
        if self._direct is None:
            raise RuntimeError("an EngineServer deployed as an ingress needs `direct`")
        return gate(app, **self._direct)

    async def call(self, kind: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        try:
            request = _SCHEMAS[kind].model_validate(body)
        except ValidationError as exc:
            yield invalid_request(kind, exc)
            return
        stream = await (self.chat(request) if kind == "chat" else self.completions(request))  # type: ignore[arg-type]
        async for item in stream:
            yield plain(item)

    def _batch_output_stream(self, generator: AsyncGenerator[T, None]) -> AsyncGenerator[list[T], None]:
        return FirstAtOnceBatcher(generator, interval_ms=self._get_batch_interval_ms()).stream()
