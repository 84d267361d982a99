"""The GRPO run configuration: typed, validated before any work starts, and saved with the run.

A YAML file (`deepext grpo run CONFIG.yaml`) or a dict (`deepext.grpo.train(config)`) becomes a
`GRPOConfig`; a wrong field fails here with its dotted path (`sampling.group_size: ...`), not
minutes later on a worker. Reward functions are resolved here too, so a typo in a reward name or a
`module:function` reference is caught at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepext.errors import InvalidInput, invalid_config

T = TypeVar("T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Strict):
    rank: int = Field(8, ge=1, le=1024)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class ModelSettings(_Strict):
    path: str = Field(..., description="Local Hugging Face folder, or a hub id on a machine that can fetch it.")
    lora: LoraSettings | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="What the learner computes in and the rollout engines sample in (auto: bfloat16 on GPU, "
        "float32 on CPU). Trained weights and optimizer states stay float32 either way. bfloat16 is about "
        "twice as fast on a CPU with AMX or AVX512-BF16.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in the backward pass instead of keeping them: the "
        "learner's activation memory drops from all layers to about one (what full fine-tuning of a 7B "
        "model on one GPU needs), for one more forward pass per micro-batch.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the learner's decoder layers (dynamic shapes) and, on CPU, let vLLM compile "
        "its model too (on GPU it always does): on this project's CPU a micro-batch took 27% less time, after a "
        "one-time compile of about 20 s in the learner, and each engine started about 15 s later with an empty "
        "compile cache. Worth it for runs of more than a few minutes. Prompts are then not shared (the KV "
        "cache breaks the compiled layers).",
    )
    attention: Literal["auto", "sdpa", "eager"] = Field(
        "auto",
        description="The learner's attention kernel. auto: SDPA on GPU; on CPU, Hugging Face's eager (matrix "
        "multiply) attention for micro-batches of up to 256 tokens a row and SDPA for longer ones, because "
        "SDPA's CPU backward is slow on short rows (docs/grpo.md, Learner speed).",
    )


class DataSettings(_Strict):
    """Where prompts come from: a dataset version in the platform, or a local JSONL file."""

    dataset: str | None = Field(None, description="PROJECT/NAME@VERSION of a pushed dataset.")
    path: str | None = Field(None, description="A local JSONL file (examples, quick tries).")
    eval_dataset: str | None = None
    eval_path: str | None = None
    prompt_field: str = "prompt"
    chat_template: bool = Field(True, description="Wrap each prompt as a user message in the model's chat template.")
    system_prompt: str | None = None
    max_prompt_tokens: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DataSettings:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of data.dataset or data.path")
        return self


class RewardSettings(_Strict):
    name: str = Field(..., description="A built-in reward, or module:function.")
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)
    alias: str | None = None


class SamplingSettings(_Strict):
    group_size: int = Field(8, ge=2, description="Completions per prompt (G).")
    prompts_per_step: int = Field(16, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)


class OptimSettings(_Strict):
    learning_rate: float = Field(1e-5, gt=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)


class AlgorithmSettings(_Strict):
    advantage: Literal["grpo", "drgrpo"] = "grpo"
    loss_agg: Literal["token-mean", "seq-mean", "seq-sum-norm"] = "token-mean"
    kl_coef: float = Field(0.0, ge=0)
    clip_low: float = Field(0.2, ge=0, lt=1)
    clip_high: float = Field(0.28, ge=0)
    updates_per_batch: int = Field(1, ge=1, description="Optimizer steps on each sampled batch.")
    tis_cap: float | None = Field(2.0, gt=0, description="Truncated importance sampling cap; null turns it off.")


class ScheduleSettings(_Strict):
    steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    eval_every: int = Field(0, ge=0, description="Steps between evaluations; 0 turns them off.")
    eval_prompts: int = Field(64, ge=1)
    eval_suite: str | None = Field(
        None, description="PROJECT/NAME[@N] of a stored eval suite whose checks also score the held-out answers."
    )
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints; 0 keeps only the final one.")
    seed: int = 0

    @model_validator(mode="after")
    def _one_length(self) -> ScheduleSettings:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of schedule.steps or schedule.epochs")
        return self


class ResourceSettings(_Strict):
    num_learners: int = Field(1, ge=1)
    num_rollout_workers: int = Field(1, ge=1)
    learner_cpus: float = Field(1, gt=0)
    learner_gpus: float = Field(0, ge=0)
    rollout_cpus: float = Field(1, gt=0)
    rollout_gpus: float = Field(0, ge=0)
    learner_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Extra Ray resources each learner needs: a custom resource that only some nodes offer "
        "(started with `ray start --resources`) places the learners on those nodes.",
    )
    rollout_resources: dict[str, float] = Field(
        default_factory=dict, description="Extra Ray resources each rollout worker needs (places the vLLM engines)."
    )
    micro_batch_size: int = Field(16, ge=1, description="Sequences per forward/backward pass on a learner.")
    share_prompts: bool = Field(
        True,
        description="The learner runs each distinct prompt of a micro-batch once and its completions attend to "
        "that pass's keys and values, instead of running the prompt once per completion: the same logits and "
        "gradients for G-1 fewer prompt passes. Not under gradient checkpointing, which drops the cache.",
    )
    threads_per_worker: int | None = Field(
        None,
        ge=1,
        description="CPU threads each learner and rollout worker may use (null: its Ray CPUs). Sampling and "
        "learning take turns, so on one CPU machine set it to the core count and each phase uses every core.",
    )
    max_model_len: int = Field(1024, ge=16)
    sync_timeout_s: float = Field(
        120, gt=0, description="How long a weight sync, or a restarted rollout worker, may take before the run fails."
    )
    engine_start_timeout_s: float = Field(
        900,
        gt=0,
        description="How long the learners wait for the rollout engines' first start (model load; on GPU, "
        "CUDA graph capture), counted from when the run creates them, before the run fails.",
    )
    max_failures: int = Field(1, ge=0, description="Learner restarts from the last checkpoint before the run fails.")

    @field_validator("learner_resources", "rollout_resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(f"{name!r} has its own setting (learner_cpus, rollout_gpus, ...)")
            if amount <= 0:
                raise ValueError(f"{name!r} must be a positive amount, not {amount}")
        return value


class GRPOConfig(_Strict):
    name: str = "grpo"
    model: ModelSettings
    data: DataSettings
    rewards: list[RewardSettings] = Field(..., min_length=1)
    sampling: SamplingSettings = SamplingSettings()
    optim: OptimSettings = OptimSettings()
    algorithm: AlgorithmSettings = AlgorithmSettings()
    schedule: ScheduleSettings = ScheduleSettings(steps=100)
    resources: ResourceSettings = ResourceSettings()
    output_dir: str | None = Field(None, description="Where the run writes metrics and models; default under home.")

    @model_validator(mode="after")
    def _rewards_resolve(self) -> GRPOConfig:
        from deepext.grpo.rewards import RewardSet, RewardSpec

        RewardSet([RewardSpec(name=r.name, weight=r.weight, params=r.params, alias=r.alias) for r in self.rewards])
        return self

    def digest(self) -> str:
        return config_digest(self)


def parse_config(data: dict[str, Any] | GRPOConfig) -> GRPOConfig:
    """A validated config; InvalidInput names the first wrong field by its dotted path."""
    if isinstance(data, GRPOConfig):
        return data
    try:
        return GRPOConfig.model_validate(data)
    except ValidationError as exc:
        raise invalid_config("GRPO config", exc) from exc


def load_config(path: Path | str) -> GRPOConfig:
    return load_config_file(path, parse_config)


def load_config_file(path: Path | str, parse: Callable[[dict[str, Any]], T]) -> T:
    """A YAML config file through `parse`; errors name the file (and the field)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a mapping of config sections")
    try:
        return parse(data)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}", field=exc.field) from exc


def config_digest(config: BaseModel) -> str:
    """A stable hash of a config, recorded with the model it produces."""
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
