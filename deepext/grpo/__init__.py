"""The GRPO engine: vLLM rollout actors, Ray Train learners, rewards, weight sync, checkpoints.

`train(config)` runs a whole GRPO run (see `deepext.grpo.loop`); the heavy imports (torch, vLLM,
Ray) happen only when it is called.
"""

from __future__ import annotations

from typing import Any


def train(config: Any, **kwargs: Any) -> Any:
    from deepext.grpo.loop import train as run

    return run(config, **kwargs)


__all__ = ["train"]
