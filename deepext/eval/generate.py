"""Batch generation for evaluation: the suite's prompts through vLLM actors on Ray, data-parallel.

The actors are the GRPO engine's rollout workers (`deepext.grpo.rollout.RolloutWorker`): one vLLM
engine each, the prompts split evenly between them, every prompt of a worker's share handed to vLLM
at once so its scheduler batches them. `generate_with_transformers` is the plain
`model.generate` loop the throughput benchmark compares against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


def render_prompts(
    tokenizer: Any, prompts: list[str], *, chat_template: bool = True, system_prompt: str | None = None
) -> list[list[int]]:
    """Token ids of each prompt, wrapped in the model's chat template unless told not to."""
    from deepext.grpo.config import DataSettings
    from deepext.grpo.data import render_prompt

    data = DataSettings(path="-", chat_template=chat_template, system_prompt=system_prompt)
    return [tokenizer(render_prompt(p, tokenizer, data), add_special_tokens=False).input_ids for p in prompts]


def generate_with_vllm(
    model_path: Path | str,
    prompt_ids: list[list[int]],
    settings: GenerationSettings,
    *,
    workers: int = 1,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    threads: int | None = None,
    max_model_len: int = 2048,
) -> list[str]:
    """One completion per prompt, in prompt order, from `workers` vLLM actors on the connected Ray.

    `max_model_len` is capped at what the model supports; a prompt longer than that less
    `max_new_tokens` keeps its end (where the question or the judge's instruction is)."""
    import ray

    from deepext.grpo.rollout import RolloutWorker, SamplingRequest, split_evenly

    max_model_len = min(max_model_len, max_positions(model_path))
    room = max(1, max_model_len - settings.max_new_tokens)
    prompt_ids = [ids[-room:] for ids in prompt_ids]
    actor: Any = ray.remote(RolloutWorker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
    pool = [
        actor.remote(str(model_path), max_model_len=max_model_len, seed=settings.seed + i, threads=threads)
        for i in range(max(1, min(workers, len(prompt_ids))))
    ]
    try:
        chunks = split_evenly(list(enumerate(prompt_ids)), len(pool))
        if settings.temperature == 0:
            futures = [
                w.greedy.remote([ids for _, ids in chunk], settings.max_new_tokens)
                for w, chunk in zip(pool, chunks, strict=True)
            ]
            return [c.text for part in ray.get(futures) for c in part]
        request = SamplingRequest(
            group_size=1,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=settings.seed,
        )
        futures = [w.generate.remote(chunk, request) for w, chunk in zip(pool, chunks, strict=True)]
        groups = [g for part in ray.get(futures) for g in part]
        return [g.completions[0].text for g in sorted(groups, key=lambda g: g.prompt_index)]
    finally:
        ray.get([w.shutdown.remote() for w in pool])
        for w in pool:
            ray.kill(w)


def max_positions(model_path: Path | str) -> int:
    """The longest sequence the model's config allows (a large default when it does not say)."""
    import json

    config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    return int(config.get("max_position_embeddings") or 1 << 20)


def generate_with_transformers(
    model_path: Path | str, prompt_ids: list[list[int]], settings: GenerationSettings, *, batch_size: int = 32
) -> list[str]:
    """The plain Hugging Face loop: left-padded batches through `model.generate`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(settings.seed)
    texts: list[str] = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=pad,
                **(sampling if settings.temperature > 0 else {"do_sample": False}),
            )
        texts.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return texts
