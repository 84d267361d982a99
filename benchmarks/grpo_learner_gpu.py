"""The GRPO learner's GPU path on real model sizes: one `PolicyLearner.learn` (the code a Ray Train
learner runs each step) on a GRPO-shaped batch, in bf16 on CUDA, for a SmolLM2-135M- and a
Qwen2.5-1.5B-shaped model (random weights: the arithmetic is what is timed, not what it learns).

Per shape and mode (full fine-tune without KL; full with the KL term against a frozen copy; LoRA r16
with KL against the adapter switched off; full with gradient checkpointing) it prints completion
tokens/s through forward + backward + optimizer step, and peak GPU memory (on CPU: how far the
process's resident memory rises during the timed steps). Before that, a check that the GPU path computes what the CPU
path does: the same learner step on a small model in float32 on CPU and on the GPU (loss and
gradient norm agree to float rounding) and in bf16 on the GPU (close).

It needs torch, transformers, peft, pydantic and pyyaml only: no Ray, no vLLM.

    python benchmarks/grpo_learner_gpu.py [--shapes smollm2-135m,qwen2.5-1.5b] [--rows 64]
        [--prompt 128] [--completion 512] [--micro 16] [--repeats 3]

On a machine without CUDA it runs the check on CPU alone and the timings on `--cpu-shapes` (by
default the smallest), in float32, so the script itself can be tried anywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepext.grpo.batch import LearnerBatch, SampledSequence, build_batch
from deepext.grpo.config import parse_config
from deepext.grpo.learner import PolicyLearner

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"arch": "llama", "hidden": 64, "layers": 2, "heads": 2, "kv": 1, "ffn": 128, "vocab": 512},
    "smollm2-135m": {"arch": "llama", "hidden": 576, "layers": 30, "heads": 9, "kv": 3, "ffn": 1536, "vocab": 49152},
    "qwen2.5-1.5b": {"arch": "qwen2", "hidden": 1536, "layers": 28, "heads": 12, "kv": 2, "ffn": 8960, "vocab": 151936},
    "qwen2.5-7b": {"arch": "qwen2", "hidden": 3584, "layers": 28, "heads": 28, "kv": 4, "ffn": 18944, "vocab": 152064},
}
MODES: dict[str, dict[str, Any]] = {
    "full": {"algorithm": {"kl_coef": 0.0}},
    "full+kl": {"algorithm": {"kl_coef": 0.04}},
    "lora16+kl": {"algorithm": {"kl_coef": 0.04}, "lora": {"rank": 16, "alpha": 32}},
    "full+gc": {"algorithm": {"kl_coef": 0.0}, "gradient_checkpointing": True},
}


def save_random_model(shape: str, folder: Path, dtype: torch.dtype) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    s = SHAPES[shape]
    config_class = LlamaConfig if s["arch"] == "llama" else Qwen2Config
    config = config_class(
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"],
        intermediate_size=s["ffn"],
        vocab_size=s["vocab"],
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # a 7B model initializes in seconds there
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    path = folder / shape
    model.save_pretrained(path)
    return path


def grpo_batch(vocab: int, rows: int, prompt: int, completion: int, group: int = 8) -> LearnerBatch:
    """Prompts of 50-100 % of `prompt` tokens, completions of 25-100 % of `completion`, advantages
    normalized per group of `group` rows (a quarter of groups all-equal, as in a real run)."""
    generator = torch.Generator().manual_seed(1)
    sequences = []
    for row in range(rows):
        p = int(prompt * (0.5 + 0.5 * torch.rand(1, generator=generator).item()))
        c = int(completion * (0.25 + 0.75 * torch.rand(1, generator=generator).item()))
        ids = torch.randint(3, vocab, (p + c,), generator=generator).tolist()
        logprobs = (-torch.rand(c, generator=generator) * 4).tolist()
        flat = (row // group) % 4 == 0
        advantage = 0.0 if flat else float(torch.randn(1, generator=generator).item())
        sequences.append(SampledSequence(ids[:p], ids[p:], logprobs, advantage))
    return build_batch(sequences, pad_id=0)


def learner_config(model: Path, mode: str, micro: int, dtype: str) -> dict[str, Any]:
    spec = MODES[mode]
    model_section: dict[str, Any] = {"path": str(model), "dtype": dtype}
    if "lora" in spec:
        model_section["lora"] = spec["lora"]
    model_section["gradient_checkpointing"] = spec.get("gradient_checkpointing", False)
    return {
        "model": model_section,
        "data": {"path": "unused.jsonl"},
        "rewards": [{"name": "exact_match"}],
        "optim": {"learning_rate": 1e-6, "grad_clip": 1.0},
        "algorithm": {"tis_cap": 2.0, **spec["algorithm"]},
        "resources": {"micro_batch_size": micro},
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_gpu_matches_cpu(folder: Path, gpu: torch.device | None) -> None:
    """One learner step on the tiny model: CPU float32 against GPU float32 and bf16."""
    model = save_random_model("tiny", folder, torch.float32)
    batch = grpo_batch(SHAPES["tiny"]["vocab"], rows=16, prompt=32, completion=48)
    runs: dict[str, dict[str, float]] = {}
    targets = [("cpu-float32", torch.device("cpu"), "float32")]
    if gpu is not None:
        targets += [("gpu-float32", gpu, "float32"), ("gpu-bfloat16", gpu, "bfloat16")]
    for name, device, dtype in targets:
        config = parse_config(learner_config(model, "full+kl", micro=4, dtype=dtype))
        learner = PolicyLearner(config, device=device, total_steps=1)
        sums = learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
        runs[name] = {"loss": sums["loss"], "grad_norm": sums["grad_norm_sum"], "kl": sums["kl_sum"] / sums["tokens"]}
        print(f"check {name}: loss={sums['loss']:.6g} grad_norm={runs[name]['grad_norm']:.6g}", flush=True)
    if gpu is not None:
        for name, tolerance in (("gpu-float32", 1e-4), ("gpu-bfloat16", 5e-2)):
            for key in ("loss", "grad_norm"):
                reference = runs["cpu-float32"][key]
                error = abs(runs[name][key] - reference) / max(abs(reference), 1e-12)
                verdict = "ok" if error <= tolerance else "MISMATCH"
                print(f"check {name} vs cpu-float32 {key}: relative error {error:.2e} ({verdict}, <= {tolerance:g})")


class ResidentPeak:
    """The most this process's resident memory rose above its level at entry (sampled every 5 ms)."""

    def __enter__(self) -> ResidentPeak:
        self.base = self.peak = _resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _resident_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_gib(self) -> float:
        return (self.peak - self.base) / 2**30


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_learner(
    model: Path, mode: str, batch: LearnerBatch, device: torch.device, micro: int, dtype: str, repeats: int
) -> dict[str, float]:
    config = parse_config(learner_config(model, mode, micro, dtype))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    learner = PolicyLearner(config, device=device, total_steps=repeats + 1)
    learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)  # warm-up: allocator, kernels
    seconds = []
    with ResidentPeak() as resident:  # on CPU: how far above the learner at rest the process grows
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            learner.learn(batch, num_tokens=batch.num_tokens, num_seqs=batch.size)
            sync(device)
            seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else resident.growth_gib
    del learner
    median = statistics.median(seconds)
    return {"s": median, "tokens_per_s": batch.num_tokens / median, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="smollm2-135m,qwen2.5-1.5b")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rows", type=int, default=64, help="sequences per batch (8 prompts x G=8)")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--completion", type=int, default=512)
    parser.add_argument("--micro", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-shapes", default="tiny", help="shapes timed where there is no CUDA")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    print(f"torch {torch.__version__}; device {torch.cuda.get_device_name() if cuda else 'cpu (no CUDA)'}", flush=True)
    shapes = args.shapes.split(",") if cuda else args.cpu_shapes.split(",")
    dtype = "bfloat16" if cuda else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        check_gpu_matches_cpu(folder, device if cuda else None)
        for shape in shapes:
            model = save_random_model(shape, folder, torch.bfloat16 if cuda else torch.float32)
            if cuda:
                torch.cuda.empty_cache()
            batch = grpo_batch(SHAPES[shape]["vocab"], args.rows, args.prompt, args.completion)
            for mode in args.modes.split(","):
                try:
                    result = time_learner(model, mode, batch, device, args.micro, dtype, args.repeats)
                except torch.OutOfMemoryError:
                    print(f"grpo_learner shape={shape} mode={mode} out of GPU memory", flush=True)
                    torch.cuda.empty_cache()
                    continue
                print(
                    f"grpo_learner shape={shape} mode={mode} dtype={dtype} rows={batch.size} "
                    f"tokens={batch.num_tokens} step_s={result['s']:.3f} "
                    f"tokens_per_s={result['tokens_per_s']:.0f} peak_gib={result['peak_gib']:.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
