"""Playground: chat with a deployed model (`PROJECT/NAME`) or a provider model
(`PROJECT/PROVIDER/MODEL`), both from GET /v1/models, through the OpenAI-compatible gateway, streamed,
with the sampling settings at hand; optionally grounded in a knowledge base (the request's `rag`
field; the passages used are shown under the answer). The A/B tab sends one prompt to two models and
streams both answers side by side."""

from __future__ import annotations

import html
import queue
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from apps.gradio.engine import Engine
from apps.gradio.pages import Page
from apps.gradio.session import UiSession


def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    with engine.client(session) as client:
        models = client.chat_models()
        readable = session.project and session.may("knowledge", "read")
        bases = [kb.name for kb in client.knowledge_bases(session.project)] if readable else []
    mine = [m for m in models if m.startswith(f"{session.project}/")] + [
        m for m in models if not m.startswith(f"{session.project}/")
    ]
    note = "" if models else "No deployed model you may chat with yet: deploy a model version first."
    first, second = (mine[0] if mine else None), (mine[1] if len(mine) > 1 else (mine[0] if mine else None))
    return (
        note,
        gr.update(choices=mine, value=first),
        gr.update(choices=mine, value=first),
        gr.update(choices=mine, value=second),
        gr.update(choices=bases, value=bases[0] if bases else None),
        gr.update(interactive=bool(bases), value=False, label="Use a knowledge base" if bases else "No knowledge base"),
    )


def rag_field(use: bool, knowledge_base: str | None, top_k: float) -> dict[str, Any] | None:
    """The chat request's `rag` field, or None when the toggle is off."""
    if not use or not knowledge_base:
        return None
    return {"knowledge_base": knowledge_base, "top_k": int(top_k)}


def sources_html(sources: list[dict[str, Any]]) -> str:
    """The passages a RAG answer used: `[n] document #chunk (score)` and the text, folded."""
    if not sources:
        return ""
    items = []
    for source in sources:
        score = source.get("score")
        where = f"{source.get('document', '')} #{source.get('chunk', '')}" + (
            f" · score {float(score):.3f}" if isinstance(score, int | float) else ""
        )
        text = html.escape(str(source.get("text", ""))[:600])
        items.append(
            f"<li><details><summary>[{html.escape(str(source.get('n', '')))}] {html.escape(where)}</summary>"
            f"<div class='source-text'>{text}</div></details></li>"
        )
    return f"<div class='chat-sources'><b>Sources</b><ol>{''.join(items)}</ol></div>"


def chat(
    session: UiSession,
    engine: Engine,
    model: str | None,
    message: str,
    history: list[dict[str, Any]],
    temperature: float,
    top_p: float,
    max_tokens: float,
    use_rag: bool = False,
    knowledge_base: str | None = None,
    top_k: float = 4,
) -> Iterator[tuple[Any, ...]]:
    """The conversation with the answer growing as the model streams it, then its sources."""
    if not model:
        yield ("**Error: Pick a model.**", gr.skip(), gr.skip(), gr.skip())
        return
    if not message.strip():
        yield (gr.skip(), gr.skip(), gr.skip(), gr.skip())
        return
    messages = [{"role": m["role"], "content": _text(m["content"])} for m in history or []]
    messages.append({"role": "user", "content": message})
    shown = [*messages, {"role": "assistant", "content": ""}]
    yield ("", shown, "", "")
    sampling: dict[str, Any] = {"temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens)}
    sources: list[dict[str, Any]] = []
    rag = rag_field(use_rag, knowledge_base, top_k)
    with engine.client(session) as client:
        for piece in client.chat_stream(model, messages, rag=rag, on_sources=sources.extend, **sampling):
            shown[-1]["content"] += piece
            yield (gr.skip(), shown, gr.skip(), sources_html(sources) if sources else gr.skip())
    if rag and not sources:
        yield (gr.skip(), gr.skip(), gr.skip(), "<small>No sources came back with this answer.</small>")


def merge_streams(streams: list[Iterator[str]]) -> Iterator[tuple[int, str]]:
    """(which stream, piece) as pieces arrive from several streams read at once, each in a thread;
    an error in one stream is raised here once the others are done."""
    pieces: queue.Queue[tuple[int, str | BaseException | None]] = queue.Queue()

    def pump(index: int, stream: Iterator[str]) -> None:
        try:
            for piece in stream:
                pieces.put((index, piece))
        except BaseException as exc:  # handed to the reader, which re-raises it
            pieces.put((index, exc))
        pieces.put((index, None))

    for index, stream in enumerate(streams):
        threading.Thread(target=pump, args=(index, stream), daemon=True).start()
    running, error = len(streams), None
    while running:
        index, item = pieces.get()
        if item is None:
            running -= 1
        elif isinstance(item, BaseException):
            error = error or item
        else:
            yield index, item
    if error is not None:
        raise error


def compare_models(
    session: UiSession,
    engine: Engine,
    model_a: str | None,
    model_b: str | None,
    prompt: str,
    temperature: float,
    top_p: float,
    max_tokens: float,
) -> Iterator[tuple[Any, ...]]:
    """One prompt to two models; both answers grow side by side as they stream."""
    if not model_a or not model_b:
        yield ("**Error: Pick two models.**", gr.skip(), gr.skip())
        return
    if not prompt.strip():
        yield (gr.skip(), gr.skip(), gr.skip())
        return
    answers = ["", ""]
    yield ("", "", "")
    messages = [{"role": "user", "content": prompt}]
    sampling: dict[str, Any] = {"temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens)}
    with engine.client(session) as first, engine.client(session) as second:
        streams = [first.chat_stream(model_a, messages, **sampling), second.chat_stream(model_b, messages, **sampling)]
        for index, piece in merge_streams(streams):
            answers[index] += piece
            yield (gr.skip(), answers[0], answers[1])


def _text(content: Any) -> str:
    """A Chatbot message's content as plain text (Gradio may hand back a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def build(engine: Engine, session: gr.State) -> Page:
    status = gr.Markdown(elem_id="playground-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3), gr.Tabs():
            with gr.Tab("Chat"):
                chatbot = gr.Chatbot(label="Chat", height=400, elem_id="chatbot")
                sources = gr.HTML(elem_id="chat-sources")
                with gr.Row():
                    message = gr.Textbox(placeholder="Say something", show_label=False, scale=5, elem_id="chat-input")
                    send = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="chat-send")
                with gr.Row():
                    model = gr.Dropdown(label="Model", choices=[], elem_id="chat-model", scale=3)
                    clear = gr.Button("Clear chat", size="sm", scale=1)
            with gr.Tab("A/B"):
                with gr.Row():
                    model_a = gr.Dropdown(label="Model A", choices=[], elem_id="ab-model-a")
                    model_b = gr.Dropdown(label="Model B", choices=[], elem_id="ab-model-b")
                with gr.Row(equal_height=True):
                    answer_a = gr.Textbox(label="A", lines=12, interactive=False, elem_id="ab-answer-a")
                    answer_b = gr.Textbox(label="B", lines=12, interactive=False, elem_id="ab-answer-b")
                with gr.Row():
                    prompt = gr.Textbox(
                        placeholder="One prompt for both", show_label=False, scale=5, elem_id="ab-input"
                    )
                    ask = gr.Button("Ask both", variant="primary", scale=1, min_width=90, elem_id="ab-send")
        with gr.Column(scale=1):
            reload_button = gr.Button("Reload models", size="sm")
            with gr.Accordion("Sampling", open=True):
                temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature")
                top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top p")
                max_tokens = gr.Slider(1, 4096, value=256, step=1, label="Max tokens")
            with gr.Accordion("Knowledge base (RAG)", open=True):
                use_rag = gr.Checkbox(label="Use a knowledge base", value=False, elem_id="rag-toggle")
                knowledge_base = gr.Dropdown(label="Knowledge base", choices=[], elem_id="rag-base")
                top_k = gr.Slider(1, 20, value=4, step=1, label="Passages (top k)")

    sampling = [temperature, top_p, max_tokens]
    inputs = [session, model, message, chatbot, *sampling, use_rag, knowledge_base, top_k]
    for trigger in (send.click, message.submit):
        trigger(engine.stream(chat, 3), inputs, [session, status, chatbot, message, sources])
    for trigger in (ask.click, prompt.submit):
        trigger(
            engine.stream(compare_models, 2),
            [session, model_a, model_b, prompt, *sampling],
            [session, status, answer_a, answer_b],
        )
    clear.click(lambda: ([], ""), None, [chatbot, sources])
    refresh_action = engine.action(refresh, 5)
    outputs = [status, model, model_a, model_b, knowledge_base, use_rag]
    reload_button.click(refresh_action, [session], [session, *outputs])
    return Page(refresh_action, outputs)
