"""Learners on Ray Train: N learners make the same update as one, and a killed learner resumes."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from deepext.grpo.batch import LearnerBatch, SampledSequence, build_batch
from deepext.grpo.config import parse_config
from deepext.grpo.learner import CPU_EAGER_MAX_TOKENS, PolicyLearner, attention_kernel, full_attention_cache
from tests.helpers import registered_checkpoints, wait_until, wait_until_held


def fixed_batch(vocab: int = 400, rows: int = 6) -> LearnerBatch:
    generator = torch.Generator().manual_seed(0)
    sequences = []
    for row in range(rows):
        prompt = torch.randint(3, vocab, (3 + row % 3,), generator=generator).tolist()
        completion = torch.randint(3, vocab, (4 + (row * 5) % 7,), generator=generator).tolist()
        logprobs = (-torch.rand(len(completion), generator=generator) * 6).tolist()
        sequences.append(SampledSequence(prompt, completion, logprobs, float(row % 3) - 1.0))
    return build_batch(sequences, pad_id=0)


def learner_config(model: Path, **algorithm: Any) -> dict[str, Any]:
    return {
        "model": {"path": str(model)},
        "data": {"path": "unused.jsonl"},
        "rewards": [{"name": "exact_match"}],
        "optim": {"learning_rate": 0.05, "grad_clip": 1.0},
        "algorithm": {"tis_cap": 2.0, **algorithm},
        "resources": {"micro_batch_size": 2},
    }


def flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def flat_gradients(model: torch.nn.Module) -> torch.Tensor:
    """The gradient the last optimizer step used (summed over learners, clipped)."""
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean", "seq-sum-norm"])
def test_skipping_zero_advantage_rows_gives_the_same_gradient(tiny_model: Path, loss_agg: str) -> None:
    batch = fixed_batch(rows=9)  # advantages -1, 0, 1, ...: a third of the rows are 0
    kept = batch.with_nonzero_advantage()
    assert kept.size == 6 and bool((kept.advantages != 0).all())
    config = parse_config(learner_config(tiny_model, loss_agg=loss_agg, kl_coef=0.0))
    gradients = []
    for rows in (batch, kept):
        learner = PolicyLearner(config, device=torch.device("cpu"), total_steps=1)
        learner.learn(rows, num_tokens=batch.num_tokens, num_seqs=batch.size)
        gradients.append(flat_gradients(learner.model))
    full, skipped = gradients
    assert full.abs().max().item() > 0
    torch.testing.assert_close(skipped, full, rtol=1e-5, atol=1e-7 * full.abs().max().item())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_update(tiny_model: Path, lora: bool) -> None:
    config = learner_config(tiny_model, kl_coef=0.05)  # with LoRA the KL reference is the adapter switched off
    if lora:
        config["model"]["lora"] = {"rank": 4, "alpha": 8}
    updates = []
    for checkpointing in (False, True):
        grpo = parse_config({**config, "model": {**config["model"], "gradient_checkpointing": checkpointing}})
        torch.manual_seed(0)  # the same LoRA initialization both times
        learner = PolicyLearner(grpo, device=torch.device("cpu"), total_steps=1)
        assert learner.model.is_gradient_checkpointing is checkpointing
        batch = fixed_batch()
        learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
        updates.append((flat_gradients(learner.model), flat_parameters(learner.model)))
    (plain_grad, plain_params), (checkpointed_grad, checkpointed_params) = updates
    assert plain_grad.abs().max().item() > 0
    torch.testing.assert_close(checkpointed_grad, plain_grad, rtol=1e-5, atol=1e-6 * plain_grad.abs().max().item())
    torch.testing.assert_close(checkpointed_params, plain_params)


def grouped_batch(vocab: int = 400, prompts: int = 3, group: int = 4) -> LearnerBatch:
    """GRPO-shaped: `group` completions of different lengths after each of `prompts` prompts."""
    generator = torch.Generator().manual_seed(1)
    sequences = []
    for index in range(prompts):
        prompt = torch.randint(3, vocab, (4 + 3 * index,), generator=generator).tolist()
        for row in range(group):
            completion = torch.randint(3, vocab, (2 + (row * 3) % 7,), generator=generator).tolist()
            logprobs = (-torch.rand(len(completion), generator=generator) * 6).tolist()
            sequences.append(SampledSequence(prompt, completion, logprobs, float(row % 3) - 1.0))
    return build_batch(sequences, pad_id=0)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sharing_prompts_gives_the_same_update_from_one_pass_per_prompt(tiny_model: Path, lora: bool) -> None:
    config = learner_config(tiny_model, kl_coef=0.05)  # the KL reference goes through the same path
    config["resources"]["micro_batch_size"] = 6  # micro-batches that hold one prompt's rows and parts of two
    if lora:
        config["model"]["lora"] = {"rank": 4, "alpha": 8}
    batch = grouped_batch()
    updates, embedded_rows = [], []
    for share in (False, True):
        grpo = parse_config({**config, "resources": {**config["resources"], "share_prompts": share}})
        torch.manual_seed(0)
        learner = PolicyLearner(grpo, device=torch.device("cpu"), total_steps=1)
        assert learner.shares_prompts is share
        rows: list[int] = []
        learner.model.get_input_embeddings().register_forward_hook(
            lambda _m, args, _o, rows=rows: rows.append(args[0].shape[0])
        )
        learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
        updates.append(flat_gradients(learner.model))
        embedded_rows.append(rows)
    # Without sharing every pass embeds whole micro-batches; with it, the prompts' passes embed one
    # row per distinct prompt (1 or 2 of the 6 rows).
    assert set(embedded_rows[0]) == {6}
    assert {1, 2} & set(embedded_rows[1])
    plain, shared = updates  # gradients; AdamW's first step is about lr * sign(g), which rounding can flip
    assert plain.abs().max().item() > 0
    torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-5 * plain.abs().max().item())


def test_gradient_checkpointing_turns_prompt_sharing_off(tiny_model: Path) -> None:
    config = learner_config(tiny_model)
    config["model"]["gradient_checkpointing"] = True
    learner = PolicyLearner(parse_config(config), device=torch.device("cpu"), total_steps=1)
    assert learner.shares_prompts is False  # Hugging Face drops the KV cache the prompts' pass fills


@pytest.mark.slow
def test_compiled_decoder_layers_make_the_same_update(tiny_model: Path) -> None:
    batch = grouped_batch()
    updates = []
    for compiled in (False, True):
        config = learner_config(tiny_model)
        config["model"]["compile"] = compiled
        torch.manual_seed(0)
        learner = PolicyLearner(parse_config(config), device=torch.device("cpu"), total_steps=1)
        assert learner.shares_prompts is not compiled
        if compiled:
            layers = [m for m in learner.model.modules() if type(m).__name__ == "Qwen2DecoderLayer"]
            assert len(layers) == 2 and all(layer._compiled_call_impl is not None for layer in layers)
        learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
        updates.append(flat_gradients(learner.model))
    assert updates[0].abs().max().item() > 0
    torch.testing.assert_close(updates[1], updates[0], rtol=1e-4, atol=1e-5 * updates[0].abs().max().item())


def test_prompts_are_shared_only_over_a_full_attention_cache() -> None:
    from transformers import Gemma2Config, MistralConfig

    assert full_attention_cache(MistralConfig(sliding_window=None))
    assert not full_attention_cache(MistralConfig(sliding_window=64))  # a window's cache drops old keys
    assert not full_attention_cache(Gemma2Config())  # sliding and full layers alternate


def test_attention_kernel_on_cpu_follows_the_row_length() -> None:
    assert attention_kernel("auto", "cpu", CPU_EAGER_MAX_TOKENS) == "eager"
    assert attention_kernel("auto", "cpu", CPU_EAGER_MAX_TOKENS + 1) == "sdpa"
    assert attention_kernel("auto", "cuda", 16) == "sdpa"
    assert attention_kernel("sdpa", "cpu", 16) == "sdpa"
    assert attention_kernel("eager", "cuda", 4096) == "eager"


def test_eager_and_sdpa_attention_make_the_same_update(tiny_model: Path) -> None:
    batch = fixed_batch()
    updates, kernels = [], []
    for attention in ("sdpa", "auto"):
        config = learner_config(tiny_model)
        config["model"]["attention"] = attention
        torch.manual_seed(0)
        learner = PolicyLearner(parse_config(config), device=torch.device("cpu"), total_steps=1)
        learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
        kernels.append(learner.model.config._attn_implementation)
        updates.append(flat_gradients(learner.model))
    assert kernels == ["sdpa", "eager"]  # auto: short rows on a CPU take eager attention
    torch.testing.assert_close(updates[1], updates[0], rtol=1e-4, atol=1e-5 * updates[0].abs().max().item())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_bfloat16_computes_in_bfloat16_and_keeps_updates_too_small_for_it(tiny_model: Path, lora: bool) -> None:
    config = learner_config(tiny_model, kl_coef=0.05)
    config["model"]["dtype"] = "bfloat16"
    config["optim"]["learning_rate"] = 1e-6  # a GRPO learning rate: each step moves a weight ~1e-6
    if lora:
        config["model"]["lora"] = {"rank": 4, "alpha": 8}
    learner = PolicyLearner(parse_config(config), device=torch.device("cpu"), total_steps=1)
    trained = [p for p in learner.model.parameters() if p.requires_grad]
    frozen = [p for p in learner.model.parameters() if not p.requires_grad]
    assert {p.dtype for p in trained} == {torch.float32}
    if lora:
        assert {p.dtype for p in frozen} == {torch.bfloat16}  # the base, also the KL reference
    else:
        assert {p.dtype for p in learner.reference.parameters()} == {torch.bfloat16}
    if lora:  # LoRA's B starts at zero: give the adapter weights of a trained one's size
        with torch.no_grad():
            for param in trained:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)) * 0.02)
    before = flat_parameters(learner.model).clone()
    head_inputs: list[torch.Tensor] = []  # what the output layer computes on, after the learner's hook
    learner.model.get_output_embeddings().register_forward_pre_hook(lambda _, args: head_inputs.append(args[0]))
    batch = fixed_batch()
    seen = learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
    assert seen["tokens"] == batch.num_tokens
    # A non-contiguous slice would make bfloat16 matmuls copy the output weight for every row.
    assert head_inputs and all(hidden.is_contiguous() for hidden in head_inputs)
    after = flat_parameters(learner.model)
    moved = after != before
    assert moved.float().mean().item() > 0.5  # the float32 weights took the step
    # Stored in bfloat16, nearly every one of those weights would not have moved at all.
    assert (after[moved].bfloat16() == before[moved].bfloat16()).float().mean().item() > 0.9


def learn_once(loop_config: dict[str, Any]) -> None:
    """A Ray Train worker: one update on its shard of the fixed batch; rank 0 saves the weights."""
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    learner = PolicyLearner(
        parse_config(loop_config["grpo"]), device=torch.device("cpu"), total_steps=1, rank=rank, world_size=world
    )
    batch = fixed_batch()
    learner.learn(batch.shard(rank, world), num_tokens=batch.num_tokens, num_seqs=batch.size)
    if rank == 0:
        torch.save((flat_gradients(learner.model), flat_parameters(learner.model)), loop_config["out"])


@pytest.mark.slow
@pytest.mark.parametrize("loss_agg", ["token-mean"])  # every aggregation is checked in-process above
def test_two_learners_make_the_same_update_as_one(
    ray_session: None, tiny_model: Path, tmp_path: Path, loss_agg: str
) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = learner_config(tiny_model, loss_agg=loss_agg)
    single = PolicyLearner(parse_config(config), device=torch.device("cpu"), total_steps=1)
    before = flat_parameters(single.model).clone()
    batch = fixed_batch()
    single.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
    expected, expected_grad = flat_parameters(single.model), flat_gradients(single.model)

    out = tmp_path / "two.pt"
    TorchTrainer(
        learn_once,
        train_loop_config={"grpo": config, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="equal", storage_path=str(tmp_path / "ray")),
    ).fit()
    two_grad, two = torch.load(out)
    assert (expected - before).abs().max().item() > 0.01  # the update did something
    # Two learners summing their shards' gradients give the one-learner gradient; summing in another
    # order changes float rounding only.
    torch.testing.assert_close(two_grad, expected_grad, rtol=1e-4, atol=1e-6 * expected_grad.abs().max().item())
    # Adam's first step divides by |g|, so weights agree to rounding except where g is ~0.
    assert ((two - expected).abs() < 1e-5).float().mean().item() > 0.999


def write_prompts(path: Path, count: int = 16) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"Say a number: {i}", "answer": str(i)}) + "\n" for i in range(count))
    )
    return path


def run_config(model_dir: Path, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "test",
        "model": {"path": str(model_dir)},
        "data": {"path": str(write_prompts(tmp_path / "prompts.jsonl"))},
        "rewards": [
            {"name": "regex", "params": {"pattern": "[0-9]"}},
            {"name": "length_penalty", "weight": 0.1, "params": {"max_chars": 40}},
        ],
        "sampling": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 12},
        "optim": {"learning_rate": 0.001},
        "schedule": {"steps": 3, "checkpoint_every": 2},
        "resources": {"rollout_cpus": 1, "learner_cpus": 0.5, "micro_batch_size": 8, "max_model_len": 256},
        "output_dir": str(tmp_path / "run"),
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.mark.slow
def test_a_lora_run_with_kl_and_two_learners_runs_and_resumes(
    ray_session: None, tiny_model: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from deepext.grpo.loop import train

    config = run_config(
        tiny_model,
        tmp_path,
        model={"path": str(tiny_model), "lora": {"rank": 4, "alpha": 8}},
        algorithm={"kl_coef": 0.05},
        schedule={"steps": 3, "checkpoint_every": 2, "eval_every": 2, "eval_prompts": 4},
        resources={
            "num_learners": 2,
            "learner_cpus": 0.5,
            "rollout_cpus": 1,
            "micro_batch_size": 4,
            "max_model_len": 256,
        },
    )
    result = train(config, run_id="lora")
    steps = [m for m in result.metrics if "reward_mean" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for key in (
        "reward/regex_mean",
        "reward/length_penalty_mean",
        "kl",
        "clip_fraction",
        "entropy",
        "zero_variance_group_fraction",
        "completion_len_mean",
        "tokens_per_s",
        "time/generate",
        "time/score",
        "time/learn",
        "time/sync",
        "logprob_gap",
    ):
        assert key in steps[-1], key
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first batch comes from the reference policy
    assert abs(steps[0]["logprob_gap"]) < 1e-3  # vLLM's sampling logprobs match the learner's
    assert any("eval/reward_mean" in m for m in result.metrics)
    assert result.adapter_dir is not None and (result.adapter_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert merged.config.model_type == "qwen2"
    assert list((result.output_dir / "tensorboard").glob("events.out.tfevents.*"))

    resumed = train({**config, "schedule": {**config["schedule"], "steps": 4}}, run_id="lora", resume=True)
    restarted = [m for m in resumed.metrics if "event/resumed_from_step" in m]
    assert restarted and restarted[-1]["event/resumed_from_step"] == 3
    assert [m["step"] for m in resumed.metrics if "reward_mean" in m][-2:] == [3, 4]


@pytest.mark.slow
def test_a_bfloat16_run_samples_and_learns_in_bfloat16(ray_session: None, tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from deepext.grpo.loop import train

    config = run_config(
        tiny_model,
        tmp_path,
        model={"path": str(tiny_model), "dtype": "bfloat16"},
        algorithm={"kl_coef": 0.05},
        schedule={"steps": 2, "checkpoint_every": 0},
    )
    result = train(config, run_id="bf16")
    steps = [m for m in result.metrics if "reward_mean" in m]
    assert [m["step"] for m in steps] == [1, 2]
    # vLLM's bfloat16 kernels and the learner's autocast round differently, but sample one policy.
    assert abs(steps[0]["logprob_gap"]) < 0.01  # 0.0008 seen
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-3)
    exported = load_file(str(result.model_dir / "model.safetensors"))
    base = load_file(str(tiny_model / "model.safetensors"))
    assert {tensor.dtype for tensor in exported.values()} == {torch.bfloat16}
    assert any(not torch.equal(exported[name], base[name].bfloat16()) for name in base)


@pytest.mark.slow
def test_a_killed_learner_is_restarted_and_the_run_finishes_from_its_checkpoint(
    ray_session: None, tiny_model: Path, tmp_path: Path
) -> None:
    from deepext.grpo.loop import train

    gate = tmp_path / "gate"
    gate.mkdir()
    config = run_config(
        tiny_model,
        tmp_path,
        schedule={"steps": 4, "checkpoint_every": 2},
        resources={
            "learner_cpus": 1,
            "rollout_cpus": 1,
            "micro_batch_size": 8,
            "max_model_len": 256,
            "max_failures": 1,
        },
    )
    # held in step 4's scoring: step 2 is checkpointed and the rollout worker already holds step 3's policy
    held = {"gate": str(gate), "call": 4}
    config["rewards"].append({"name": "tests.helpers:held_on_call", "params": held})
    output = Path(config["output_dir"])
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=train(config, run_id="fault")))
    runner.start()
    try:
        assert wait_until_held(gate, runner.is_alive), "the run ended before step 4"
        wait_until(lambda: registered_checkpoints(output) == 1, 60, "Ray Train to register step 2's checkpoint")
        victim = int((output / "learner-0.pid").read_text())
        os.kill(victim, signal.SIGKILL)
    finally:
        (gate / "released").touch()
    runner.join(timeout=600)
    assert "result" in outcome, "the run did not finish after the learner was killed"
    metrics = outcome["result"].metrics
    assert int((output / "learner-0.pid").read_text()) != victim  # a new learner process took over
    resumed = [m["event/resumed_from_step"] for m in metrics if "event/resumed_from_step" in m]
    assert resumed == [2]
    assert max(m["step"] for m in metrics if "reward_mean" in m) == 4
    assert (outcome["result"].model_dir / "config.json").exists()


@pytest.mark.slow
def test_an_engine_that_cannot_start_fails_the_run_with_vllms_reason(
    ray_session: None, tiny_model: Path, tmp_path: Path
) -> None:
    """The engines start while the learners do; one that fails in its constructor is the error the
    run ends with, not the learner's failure to reach it."""
    from ray.exceptions import ActorDiedError

    from deepext.grpo.loop import train

    config = run_config(tiny_model, tmp_path, resources={"max_model_len": 999_999, "max_failures": 0})
    with pytest.raises(ActorDiedError, match=r"RolloutWorker\.__init__") as caught:
        train(config, run_id="no-engine")
    assert "max_model_len" in str(caught.value)
