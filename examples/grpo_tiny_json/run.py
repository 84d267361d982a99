"""GRPO example a tiny random model learns on a laptop CPU in minutes: answer in JSON, correctly.

The task: "What color is the <object>? Reply in JSON." where every object has one right color
(a made-up table of 24 objects and 8 colors) and the answer must be `{"answer": "<color>"}`.

1. A tiny random Qwen2 model is written (`deepext models create-tiny`), ~3M parameters.
2. A short SFT warm-up (a plain PyTorch loop, 60 steps, a few seconds): the model sees the JSON
   format with RANDOM colors and half learns it: its samples are valid JSON with a real color name
   only now and then. (`deepext jobs submit sft` runs TRL's SFTTrainer as a job; this example keeps
   the warm-up inline and minimal.)
3. GRPO with two rewards: `json_schema` (weight 0.5) for the format and `json_field_match`
   (weight 1.0) for the right color. GRPO makes the format reliable within ~15 steps and then
   slowly learns the table, which only the reward can teach.

Expected curve (seen on 2 CPU cores, seeds 0/1/2, 60 steps): the mean reward of the first 10
steps 0.23 / 0.14 / 0.34 and of the last 10 steps 0.74 / 0.77 / 0.78 (x3.2 / x5.5 / x2.3), valid
JSON ~0.97 and the right color ~0.28 (chance: 1/8) at the end; 7.7 minutes for all three seeds.
The script prints the first-10 and last-10 step means and their ratio (target >= 2) per seed.

    .venv/bin/python examples/grpo_tiny_json/run.py                 # 3 seeds
    .venv/bin/python examples/grpo_tiny_json/run.py --seeds 0 --steps 30

Runs on one machine with `ray.init()`; on a cluster set DEEPEXT_RAY_ADDRESS, nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

OBJECTS = [
    "apple",
    "sky",
    "grass",
    "snow",
    "coal",
    "banana",
    "cherry",
    "ocean",
    "lemon",
    "plum",
    "rose",
    "cloud",
    "leaf",
    "tomato",
    "night",
    "sun",
    "frog",
    "crow",
    "milk",
    "lime",
    "brick",
    "violet",
    "pumpkin",
    "ink",
]
COLORS = ["red", "blue", "green", "white", "black", "yellow", "purple", "orange"]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": COLORS}},
    "required": ["answer"],
    "additionalProperties": False,
}


def color_table(seed: int = 1234) -> dict[str, str]:
    rng = random.Random(seed)
    return {obj: rng.choice(COLORS) for obj in OBJECTS}


def question(obj: str) -> str:
    return f"What color is the {obj}? Reply in JSON."


def write_prompts(path: Path) -> Path:
    table = color_table()
    with open(path, "w", encoding="utf-8") as out:
        for obj in OBJECTS:
            out.write(json.dumps({"prompt": question(obj), "answer": table[obj]}) + "\n")
    return path


def sft_warmup(model_dir: Path, steps: int, seed: int) -> None:
    """Teach the JSON format with random colors: cross-entropy on the answer tokens only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch_inputs, batch_labels = [], []
        for obj in rng.sample(OBJECTS, 16):
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question(obj)}], add_generation_prompt=True, tokenize=False
            )
            answer = json.dumps({"answer": rng.choice(COLORS)}) + "<|im_end|>"
            prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
            answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
            batch_inputs.append(prompt_ids + answer_ids)
            batch_labels.append([-100] * len(prompt_ids) + answer_ids)
        width = max(len(ids) for ids in batch_inputs)
        pad = tokenizer.pad_token_id
        inputs = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch_inputs])
        labels = torch.tensor([ids + [-100] * (width - len(ids)) for ids in batch_labels])
        mask = (labels != -100) | (inputs != pad)
        loss = model(input_ids=inputs, attention_mask=mask.long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(model_dir)


def grpo_config(model_dir: Path, prompts: Path, output: Path, steps: int, seed: int) -> dict:
    return {
        "name": f"tiny-json-seed{seed}",
        "model": {"path": str(model_dir)},
        "data": {"path": str(prompts)},
        "rewards": [
            {"name": "json_schema", "weight": 0.5, "params": {"schema": SCHEMA}},
            {"name": "json_field_match", "weight": 1.0, "params": {"field": "answer", "reference_field": "answer"}},
        ],
        "sampling": {"group_size": 8, "prompts_per_step": 8, "max_new_tokens": 16, "temperature": 1.0},
        "optim": {"learning_rate": 3e-4, "grad_clip": 1.0},
        "algorithm": {"advantage": "grpo", "loss_agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28},
        "schedule": {"steps": steps, "seed": seed, "checkpoint_every": 0},
        "resources": {
            "rollout_cpus": 1,
            "learner_cpus": 1,
            "micro_batch_size": 64,
            "max_model_len": 256,
            "threads_per_worker": 2,
        },
        "output_dir": str(output),
    }


def run_seed(seed: int, steps: int, warmup_steps: int, workdir: Path) -> dict[str, float]:
    from deepext.grpo import train
    from deepext.models.tiny import TinyModelSpec, create_tiny_model

    started = time.perf_counter()
    model_dir = create_tiny_model(
        workdir / f"model-{seed}",
        TinyModelSpec(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512, seed=seed),
    )
    sft_warmup(model_dir, warmup_steps, seed)
    prompts = write_prompts(workdir / "prompts.jsonl")
    result = train(grpo_config(model_dir, prompts, workdir / f"run-{seed}", steps, seed), run_id=f"tiny-json-{seed}")
    rewards = [m["reward_mean"] for m in result.metrics if "reward_mean" in m]
    first, last = statistics.fmean(rewards[:10]), statistics.fmean(rewards[-10:])
    return {
        "seed": seed,
        "first10": first,
        "last10": last,
        "ratio": last / first if first else float("inf"),
        "field_match_last10": statistics.fmean(
            [m["reward/json_field_match_mean"] for m in result.metrics if "reward_mean" in m][-10:]
        ),
        "schema_last10": statistics.fmean(
            [m["reward/json_schema_mean"] for m in result.metrics if "reward_mean" in m][-10:]
        ),
        "seconds": time.perf_counter() - started,
        "curve": [round(r, 3) for r in rewards],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup-steps", type=int, default=60)
    args = parser.parse_args()

    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deepext-tiny-json-") as tmp:
        results = [run_seed(seed, args.steps, args.warmup_steps, Path(tmp)) for seed in args.seeds]
    for r in results:
        print(
            f"seed {r['seed']}: reward first 10 steps {r['first10']:.3f} -> last 10 steps {r['last10']:.3f} "
            f"(x{r['ratio']:.2f}); right color {r['field_match_last10']:.2f}, valid JSON {r['schema_last10']:.2f} "
            f"in the last 10 steps; {r['seconds']:.0f} s"
        )
        print(f"  curve: {r['curve']}")
    ratios = [r["ratio"] for r in results]
    print(
        f"grpo_tiny_json seeds={len(results)} min_ratio={min(ratios):.2f} "
        f"total_minutes={(time.perf_counter() - started) / 60:.1f}"
    )


if __name__ == "__main__":
    main()
