"""Tiny random models: deterministic, and loadable by transformers and by a real vLLM engine."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from deepext.errors import InvalidInput
from deepext.models.tiny import MARKER, TinyModelSpec, count_parameters, create_tiny_model


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_same_spec_gives_the_same_files(tiny: Path, tmp_path: Path) -> None:
    assert folder_digest(create_tiny_model(tmp_path / "again")) == folder_digest(tiny)
    other = create_tiny_model(tmp_path / "seed1", TinyModelSpec(seed=1))
    assert folder_digest(other)["model.safetensors"] != folder_digest(tiny)["model.safetensors"]


def test_transformers_loads_and_chats(tiny: Path) -> None:
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert json.loads((tiny / "deepext.json").read_text())["kind"] == MARKER
    assert model.config.head_dim == 64
    assert count_parameters(tiny) == sum(p.numel() for p in model.parameters())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert tokenizer.decode(tokenizer("The capital of France").input_ids) == "The capital of France"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hidden_size": 64, "num_heads": 4}, "num_heads"),
        ({"num_kv_heads": 3, "num_heads": 2}, "num_kv_heads"),
        ({"vocab_size": 100}, "vocab_size"),
    ],
)
def test_bad_specs_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        TinyModelSpec(**changes)
    assert caught.value.field == field


@pytest.mark.slow
def test_vllm_loads_it_and_greedy_matches_transformers(tiny: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from deepext.vllm_engine import llm_engine

    prompts = ["The capital of France is", "Answer in JSON:", "1 2 3 4"]
    with llm_engine(tiny, max_model_len=256) as llm:
        outputs = llm.generate(prompts, SamplingParams(max_tokens=12, temperature=0.0))
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    for prompt, output in zip(prompts, outputs, strict=True):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        expected = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None)[0, ids.shape[1] :]
        assert list(output.outputs[0].token_ids) == expected.tolist()[: len(output.outputs[0].token_ids)]
