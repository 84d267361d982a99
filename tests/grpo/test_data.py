"""Prompt loading and the step -> rows schedule that makes resume exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepext.errors import InvalidInput
from deepext.grpo.config import DataSettings
from deepext.grpo.data import load_prompts, step_prompt_indices, total_steps


def test_each_epoch_visits_every_row_once_and_is_reproducible() -> None:
    seen = [i for step in range(5) for i in step_prompt_indices(10, 4, step, seed=1)]
    assert sorted(seen[:10]) == list(range(10))  # first epoch
    assert sorted(seen[10:20]) == list(range(10))  # second epoch, another order
    assert seen[:10] != seen[10:20]
    assert step_prompt_indices(10, 4, 3, seed=1) == step_prompt_indices(10, 4, 3, seed=1)
    assert step_prompt_indices(10, 4, 3, seed=2) != step_prompt_indices(10, 4, 3, seed=1)
    assert total_steps(100, 16, None, 2.0) == 12 and total_steps(100, 16, 7, None) == 7


def test_prompts_use_the_chat_template_and_keep_row_fields(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) for i in range(3)) + "\n")
    prompts = load_prompts(DataSettings(path=str(path), system_prompt="Be brief."), tokenizer)
    assert prompts is not None and len(prompts) == 3
    assert (
        prompts.texts[1] == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompts.rows[2]["answer"] == "2"
    assert tokenizer.decode(prompts.token_ids[1]) == prompts.texts[1]
    raw = load_prompts(DataSettings(path=str(path), chat_template=False), tokenizer)
    assert raw is not None and raw.texts[0] == "q0"


def test_bad_prompt_rows_are_named(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    with pytest.raises(InvalidInput, match=r"row 2: no text in field 'prompt'"):
        load_prompts(DataSettings(path=str(path)), tokenizer)
    path.write_text('{"prompt": "' + "word " * 400 + '"}\n')
    with pytest.raises(InvalidInput, match=r"row 1: prompt has \d+ tokens"):
        load_prompts(DataSettings(path=str(path), max_prompt_tokens=64), tokenizer)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_prompts(DataSettings(path=str(tmp_path / "missing.jsonl")), tokenizer)
