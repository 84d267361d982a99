"""Ollama: the Modelfile of an exported GGUF, a check of its syntax, and the push to a server.

The Modelfile follows Ollama's documented format (docs/modelfile.md in the Ollama repository): one
instruction per line, `FROM` required, `PARAMETER name value` with Ollama's parameter names,
`TEMPLATE` / `SYSTEM` / `LICENSE` values that may span lines inside triple quotes, `MESSAGE role
text`, `#` comments. Chat models of the ChatML family (SmolLM2, Qwen2) get Ollama's Go template for
ChatML; for any other chat template the TEMPLATE is left out and Ollama reads the one embedded in
the GGUF.

The push is Ollama's API for a local file (docs/api.md): `HEAD /api/blobs/sha256:D` (200: the
server has it), else `POST /api/blobs/sha256:D` with the file as body, then `POST /api/create` with
`files: {name: "sha256:D"}`, the template and the parameters.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from deepext.errors import BadGateway

CHATML_GO_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES")
# Ollama's documented parameters and the type of their values.
PARAMETERS: dict[str, type] = {
    "num_ctx": int,
    "repeat_last_n": int,
    "repeat_penalty": float,
    "temperature": float,
    "seed": int,
    "stop": str,
    "num_predict": int,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "mirostat": int,
    "mirostat_eta": float,
    "mirostat_tau": float,
    "tfs_z": float,
    "num_gpu": int,
    "num_thread": int,
}
MESSAGE_ROLES = ("system", "user", "assistant")
_CHUNK = 1 << 20


class OllamaError(BadGateway):
    """The Ollama server refused or could not be reached (HTTP 502 through the API)."""


def is_chatml(chat_template: str | None) -> bool:
    return bool(chat_template) and "<|im_start|>" in str(chat_template)


def modelfile(
    gguf_name: str, *, chat_template: str | None, stop: list[str], parameters: dict[str, Any] | None = None
) -> str:
    """The Modelfile next to an exported GGUF (`FROM ./<file>`)."""
    lines = [f"FROM ./{gguf_name}"]
    if is_chatml(chat_template):
        lines.append(f'TEMPLATE """{CHATML_GO_TEMPLATE}"""')
    for token in stop:
        lines.append(f"PARAMETER stop {shlex.quote(token) if ' ' in token else token}")
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def check_modelfile(text: str) -> list[str]:
    """Problems with `text` as an Ollama Modelfile, each naming its line; [] when it is valid."""
    problems: list[str] = []
    seen_from = False
    for number, instruction, argument in _instructions(text, problems):
        where = f"line {number}"
        if instruction not in INSTRUCTIONS:
            problems.append(f"{where}: unknown instruction {instruction!r}")
            continue
        if not argument:
            problems.append(f"{where}: {instruction} needs a value")
            continue
        if instruction == "FROM":
            seen_from = True
        elif instruction == "PARAMETER":
            name, _, value = argument.partition(" ")
            kind = PARAMETERS.get(name)
            if kind is None:
                problems.append(f"{where}: unknown parameter {name!r}")
            elif not value.strip():
                problems.append(f"{where}: parameter {name} needs a value")
            elif kind is not str:
                try:
                    kind(value.strip())
                except ValueError:
                    problems.append(f"{where}: parameter {name} wants a {kind.__name__}, got {value.strip()!r}")
        elif instruction == "MESSAGE":
            role = argument.split(" ", 1)[0]
            if role not in MESSAGE_ROLES:
                problems.append(f"{where}: MESSAGE role {role!r} is not one of {', '.join(MESSAGE_ROLES)}")
    if not seen_from:
        problems.append("no FROM instruction: a Modelfile must name its model")
    return problems


def _instructions(text: str, problems: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line number, INSTRUCTION, argument) per instruction; triple-quoted values may span lines."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        head, _, argument = line.partition(" ")
        argument = argument.strip()
        if argument.startswith('"""'):
            body = argument[3:]
            while '"""' not in body:
                if index >= len(lines):
                    problems.append(f"line {number}: {head.upper()} opens a triple quote that never closes")
                    return
                body += "\n" + lines[index]
                index += 1
            closing = body.index('"""')
            if body[closing + 3 :].strip():
                problems.append(f"line {number}: text after the closing triple quote")
            argument = body[:closing]
        yield number, head.upper(), argument


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def push(
    base_url: str,
    gguf_path: Path,
    model: str,
    *,
    chat_template: str | None,
    stop: list[str],
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Create `model` on the Ollama server at `base_url` from the GGUF file; the server's answer.
    The file is uploaded only if the server does not have its blob yet."""
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(600, connect=10))
    root = base_url.rstrip("/").removesuffix("/v1")
    digest = file_digest(gguf_path)
    try:
        known = http.head(f"{root}/api/blobs/{digest}")
        uploaded = False
        if known.status_code == 404:
            with gguf_path.open("rb") as body:
                sent = http.post(f"{root}/api/blobs/{digest}", content=_chunks(body))
            _raise_for(sent, "uploading the GGUF blob")
            uploaded = True
        elif known.status_code != 200:
            _raise_for(known, "asking for the GGUF blob")
        request: dict[str, Any] = {"model": model, "files": {gguf_path.name: digest}, "stream": False}
        if is_chatml(chat_template):
            request["template"] = CHATML_GO_TEMPLATE
        if stop:
            request["parameters"] = {"stop": stop}
        created = http.post(f"{root}/api/create", json=request)
        _raise_for(created, "creating the model")
        answer = created.json()
        if answer.get("status") != "success":
            raise OllamaError(f"Ollama at {root} did not create {model}: {answer}")
        return {"model": model, "digest": digest, "uploaded": uploaded, "server": root}
    except httpx.HTTPError as exc:
        raise OllamaError(f"Ollama at {root} is not reachable: {exc}") from exc
    finally:
        if own:
            http.close()


def _chunks(handle: Any) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK):
        yield chunk


def _raise_for(response: httpx.Response, doing: str) -> None:
    if response.status_code >= 400:
        detail = re.sub(r"\s+", " ", response.text)[:300]
        raise OllamaError(f"Ollama answered HTTP {response.status_code} {doing}: {detail}")
