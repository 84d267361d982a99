"""Prompts for a GRPO run: rows from a dataset version (or a JSONL file), tokenized once.

Each row keeps all its fields, since rewards read references from them (`answer`, `schema`, ...).
Prompts are rendered through the model's chat template unless the config says otherwise, and a
prompt longer than `max_prompt_tokens` is refused naming the row rather than silently cut.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepext.errors import InvalidInput
from deepext.grpo.config import DataSettings


@dataclass(frozen=True)
class PromptSet:
    rows: list[dict[str, Any]]
    texts: list[str]  # the prompt as the model sees it (chat template applied)
    token_ids: list[list[int]]
    source: str

    def __len__(self) -> int:
        return len(self.rows)


def read_rows(reference: str | None, path: str | None, platform: Any = None) -> tuple[list[dict[str, Any]], str]:
    """Rows of a dataset version (`project/name@version`) or of a JSONL file, and where they came from."""
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise InvalidInput(f"data file {file} does not exist", field="data.path")
        rows = []
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise InvalidInput(
                            f"{file}, row {number}: malformed JSON ({exc.msg})", field="data.path"
                        ) from exc
        return rows, str(file)
    if reference is None or "/" not in reference:
        raise InvalidInput(f"dataset {reference!r}: expected PROJECT/NAME[@VERSION]", field="data.dataset")
    if platform is None:
        from deepext.config import get_settings
        from deepext.platform import Platform

        platform = Platform.open(get_settings())
    project, ref = reference.split("/", 1)
    version = platform.datasets.get(project, ref)
    return platform.datasets.read_table(version).to_pylist(), version.ref


def load_prompts(
    data: DataSettings, tokenizer: Any, *, evaluation: bool = False, platform: Any = None
) -> PromptSet | None:
    reference, path = (data.eval_dataset, data.eval_path) if evaluation else (data.dataset, data.path)
    if evaluation and reference is None and path is None:
        return None
    rows, source = read_rows(reference, path, platform)
    if not rows:
        raise InvalidInput(f"{source} has no rows", field="data")
    texts, token_ids = [], []
    for number, row in enumerate(rows, start=1):
        prompt = row.get(data.prompt_field)
        if not isinstance(prompt, str) or not prompt:
            raise InvalidInput(
                f"{source}, row {number}: no text in field {data.prompt_field!r}", field="data.prompt_field"
            )
        text = render_prompt(prompt, tokenizer, data)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) > data.max_prompt_tokens:
            raise InvalidInput(
                f"{source}, row {number}: prompt has {len(ids)} tokens, more than data.max_prompt_tokens="
                f"{data.max_prompt_tokens}",
                field="data.max_prompt_tokens",
            )
        texts.append(text)
        token_ids.append(ids)
    return PromptSet(rows, texts, token_ids, source)


def render_prompt(prompt: str, tokenizer: Any, data: DataSettings) -> str:
    if not data.chat_template:
        return prompt
    messages = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    messages.append({"role": "user", "content": prompt})
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def step_prompt_indices(num_rows: int, prompts_per_step: int, step: int, seed: int) -> list[int]:
    """The rows step `step` trains on: consecutive slices of a seeded shuffle, reshuffled each epoch.

    A pure function of (step, seed), so a resumed run continues exactly where it stopped.
    """
    indices = []
    position = step * prompts_per_step
    for offset in range(prompts_per_step):
        epoch, within = divmod(position + offset, num_rows)
        indices.append(_epoch_order(num_rows, seed, epoch)[within])
    return indices


@functools.lru_cache(maxsize=4)
def _epoch_order(num_rows: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(num_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def total_steps(num_rows: int, prompts_per_step: int, steps: int | None, epochs: float | None) -> int:
    if steps is not None:
        return steps
    return max(1, round((epochs or 1.0) * num_rows / prompts_per_step))
