"""Supervised fine-tuning (full or LoRA) with TRL's `SFTTrainer`, run on Ray Train workers.

    from deepext.train.sft import train_sft
    result = train_sft(config)      # SFTResult: model_dir, adapter_dir, metrics, output_dir

`train_sft` validates the config, reads the rows on the driver (a dataset version
`PROJECT/NAME@VERSION` or a JSONL file), checks every row and turns them into TRL's dataset formats,
so a bad row fails naming its number before any worker starts. A `TorchTrainer` then runs
`resources.num_workers` workers; each builds TRL's `SFTConfig` + `SFTTrainer` on the process group
Ray Train already set up (gloo on CPU, NCCL on GPU: accelerate finds it initialized and joins it),
so the Trainer shards the data and averages gradients over the workers as under `torchrun`.

Rank 0 writes one `metrics.jsonl` row per logging step (`MetricsLog`, shared with GRPO) and, at the
end, the final Hugging Face folders `final/model` (full, or LoRA merged into the base) and, with
LoRA, `final/adapter`. The driver tails `metrics.jsonl` to call `on_metrics` while training runs.

Row formats (`data.format`, `auto` looks at the first row's fields):

| format              | fields                               | becomes (TRL)                                      |
|---------------------|--------------------------------------|----------------------------------------------------|
| `messages`          | list of {role, content}              | conversational; with `completion_only_loss` the    |
|                     |                                      | last assistant message is the completion           |
| `prompt_completion` | prompt, completion (strings)         | a user/assistant chat when `chat_template`, else   |
|                     |                                      | plain prompt-completion text                       |
| `text`              | text (string)                        | language modeling on the whole text                |
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepext.errors import Conflict, DatasetFormatError, InvalidInput, invalid_config
from deepext.eval.suite import load_suite_checks
from deepext.grpo.config import ModelSettings, config_digest, load_config_file
from deepext.grpo.data import read_rows
from deepext.grpo.loop import RunResult
from deepext.grpo.metrics import MetricsLog, read_metrics
from deepext.train.context import MetricsFollower

FINAL_DIR = "final"
RowFormat = Literal["messages", "prompt_completion", "text"]


# ---------------------------------------------------------------- config
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SFTDataSettings(_Strict):
    """Where the examples come from, what shape their rows have, and how they become tokens."""

    dataset: str | None = Field(None, description="PROJECT/NAME@VERSION of a pushed dataset.")
    path: str | None = Field(None, description="A local JSONL file.")
    format: Literal["auto", "prompt_completion", "messages", "text"] = Field(
        "auto",
        description="auto: 'messages' if the first row has the messages field, else prompt+completion, else text.",
    )
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    text_field: str = "text"
    chat_template: bool = Field(True, description="Render prompt/completion rows as a user/assistant chat.")
    system_prompt: str | None = Field(None, description="A system message before each prompt (chat_template only).")
    max_length: int | None = Field(1024, ge=8, description="Tokens per example (or per packed block); null: no cut.")
    packing: bool = Field(False, description="Pack several examples into each max_length block.")
    completion_only_loss: bool = Field(
        True, description="Learn only the completion (the last assistant message of a chat), not the prompt."
    )
    eval_dataset: str | None = Field(None, description="Held-out rows (same format) for training.eval_every.")
    eval_path: str | None = Field(None, description="Held-out rows from a local JSONL file.")

    @model_validator(mode="after")
    def _one_source(self) -> SFTDataSettings:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of data.dataset or data.path")
        if self.eval_dataset is not None and self.eval_path is not None:
            raise ValueError("give at most one of data.eval_dataset or data.eval_path")
        return self

    @property
    def has_eval(self) -> bool:
        return self.eval_dataset is not None or self.eval_path is not None


class SFTTrainingSettings(_Strict):
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(0, ge=0, description="Optimizer steps; > 0 wins over epochs.")
    learning_rate: float = Field(2e-5, gt=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1, description="Examples per worker per forward/backward pass.")
    grad_accum: int = Field(1, ge=1, description="Passes per optimizer step.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; null turns clipping off.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~30% slower.")
    seed: int = 0
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between metrics rows.")
    eval_every: int = Field(0, ge=0, description="Steps between evaluations on the held-out rows; 0: none.")
    eval_prompts: int = Field(32, ge=1, description="Held-out prompts answered (greedy) for eval_suite's checks.")
    eval_max_new_tokens: int = Field(64, ge=1)
    eval_suite: str | None = Field(
        None, description="PROJECT/NAME[@N] of a stored eval suite whose checks score the held-out answers."
    )


class SFTResourceSettings(_Strict):
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel).")
    cpus_per_worker: float = Field(1, gt=0)
    use_gpu: bool | None = Field(None, description="One GPU per worker; null: when the Ray cluster has GPUs.")
    threads_per_worker: int | None = Field(None, ge=1, description="torch CPU threads per worker (null: torch's).")


class SFTConfig(_Strict):
    name: str = "sft"
    model: ModelSettings
    data: SFTDataSettings
    training: SFTTrainingSettings = SFTTrainingSettings()
    resources: SFTResourceSettings = SFTResourceSettings()
    output_dir: str | None = Field(None, description="Where the run writes metrics and models; default under home.")

    @model_validator(mode="after")
    def _eval_needs_rows(self) -> SFTConfig:
        if self.training.eval_every and not self.data.has_eval:
            raise ValueError("training.eval_every needs held-out rows: set data.eval_dataset or data.eval_path")
        if self.training.eval_suite and not self.training.eval_every:
            raise ValueError("training.eval_suite runs every training.eval_every steps: set it above 0")
        return self

    def digest(self) -> str:
        return config_digest(self)


def parse_sft_config(data: dict[str, Any] | SFTConfig) -> SFTConfig:
    """A validated config; InvalidInput names the first wrong field by its dotted path."""
    if isinstance(data, SFTConfig):
        return data
    try:
        return SFTConfig.model_validate(data)
    except ValidationError as exc:
        raise invalid_config("SFT config", exc) from exc


def load_sft_config(path: Path | str) -> SFTConfig:
    return load_config_file(path, parse_sft_config)


# ---------------------------------------------------------------- rows -> TRL examples
def detect_format(row: dict[str, Any], data: SFTDataSettings, source: str = "data") -> RowFormat:
    """The format `data.format` names, or (auto) the one the first row's fields match."""
    if data.format != "auto":
        return data.format
    fields = sorted(row) if isinstance(row, dict) else []
    if data.messages_field in fields:
        return "messages"
    if data.prompt_field in fields and data.completion_field in fields:
        return "prompt_completion"
    if data.text_field in fields:
        return "text"
    error = DatasetFormatError(
        source,
        1,
        f"cannot tell the format from fields {fields}: expected {data.messages_field!r}, "
        f"{data.prompt_field!r}+{data.completion_field!r}, or {data.text_field!r} (or set data.format)",
    )
    error.field = "data.format"
    raise error


def to_examples(rows: list[dict[str, Any]], data: SFTDataSettings, source: str = "data") -> list[dict[str, Any]]:
    """Rows as TRL examples (`messages`, `prompt`+`completion`, or `text`), every row checked.

    A missing field or a value of the wrong type raises `DatasetFormatError` naming the 1-based row
    and the field; `error.field` names the config field that chose it.
    """
    if not rows:
        raise InvalidInput(f"{source} has no rows", field="data")
    kind = detect_format(rows[0], data, source)
    return [_example(row, number, kind, data, source) for number, row in enumerate(rows, start=1)]


def _example(row: Any, number: int, kind: RowFormat, data: SFTDataSettings, source: str) -> dict[str, Any]:
    def fail(field: str, config_field: str, reason: str) -> DatasetFormatError:
        error = DatasetFormatError(source, number, f"field {field!r}: {reason}")
        error.field = config_field
        return error

    def text(field: str, config_field: str) -> str:
        if not isinstance(row, dict) or field not in row:
            raise fail(field, config_field, "missing")
        value = row[field]
        if not isinstance(value, str) or not value:
            raise fail(field, config_field, f"expected non-empty text, found {type(value).__name__} {value!r:.40}")
        return value

    if kind == "text":
        return {"text": text(data.text_field, "data.text_field")}
    if kind == "prompt_completion":
        prompt = text(data.prompt_field, "data.prompt_field")
        completion = text(data.completion_field, "data.completion_field")
        if not data.chat_template:
            return {"prompt": prompt, "completion": completion}
        system = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
        return {
            "prompt": [*system, {"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": completion}],
        }
    from deepext.datasets.formats import CHAT_ROLES

    field = data.messages_field
    messages = row.get(field) if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        found = "missing" if messages is None else f"{type(messages).__name__} {messages!r:.40}"
        raise fail(field, "data.messages_field", f"expected a non-empty list of {{role, content}}, found {found}")
    chat = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in CHAT_ROLES:
            raise fail(field, "data.messages_field", f"message {index}: role {role!r} is not one of {CHAT_ROLES}")
        if not isinstance(content, str):
            raise fail(field, "data.messages_field", f"message {index}: 'content' must be text")
        chat.append({"role": role, "content": content})
    if not data.completion_only_loss:
        return {"messages": chat}
    if chat[-1]["role"] != "assistant" or len(chat) < 2:
        raise fail(
            field,
            "data.completion_only_loss",
            "the last message must be an assistant reply after at least one other message, "
            "or set data.completion_only_loss: false to learn the whole conversation",
        )
    return {"prompt": chat[:-1], "completion": chat[-1:]}


# ---------------------------------------------------------------- driver
SFTResult = RunResult  # the same fields as a GRPO run's result: where the model and metrics are


def train_sft(
    config: SFTConfig | dict[str, Any],
    *,
    platform: Any = None,
    run_id: str | None = None,
    on_metrics: Callable[[int, dict[str, Any]], None] | None = None,
) -> SFTResult:
    """Run SFT to the end and return where the model and metrics are.

    Everything a user can get wrong (config fields, the model folder, data rows, a missing chat
    template) fails here with InvalidInput before Ray Train starts. `on_metrics(step, metrics)` is
    called from a background thread for each metrics row while training runs, and for the last rows
    before this returns; an exception it raises is raised here once training has ended.

    The run owns `output_dir`: a new run id in a folder used before (a retried job) replaces the
    previous run's `metrics.jsonl`, `tensorboard/` and `final/`; reusing a run id there is a Conflict.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    cfg = parse_sft_config(config)
    settings = platform.settings if platform is not None else None
    if settings is None:
        from deepext.config import get_settings

        settings = get_settings()
    run_id = run_id or f"{cfg.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    output = Path(cfg.output_dir) if cfg.output_dir else settings.home / "runs" / run_id
    if (output / "ray" / run_id).exists():
        raise Conflict(f"run {run_id!r} already exists in {output}; choose another run id")

    rows, source = read_rows(cfg.data.dataset, cfg.data.path, platform)
    examples = to_examples(rows, cfg.data, source)
    _check_chat_template(cfg, examples[0])
    import datasets

    dataset = datasets.Dataset.from_list(examples)
    held_out: dict[str, Any] = {}
    if cfg.training.eval_every:
        eval_rows, eval_source = read_rows(cfg.data.eval_dataset, cfg.data.eval_path, platform)
        eval_examples = to_examples(eval_rows, cfg.data, eval_source)
        held_out = {
            "eval_dataset": ray.put(datasets.Dataset.from_list(eval_examples)),
            "eval_prompts": held_out_prompts(eval_examples, eval_rows, cfg.training.eval_prompts, eval_source),
            "eval_checks": load_suite_checks(cfg.training.eval_suite, platform, "training.eval_suite"),
        }

    _clear_previous_run(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if not ray.is_initialized():
        from deepext.cluster import connect_ray

        connect_ray(settings)
    resources = cfg.resources
    use_gpu = resources.use_gpu if resources.use_gpu is not None else ray.cluster_resources().get("GPU", 0) >= 1
    per_worker = {"CPU": resources.cpus_per_worker, **({"GPU": 1.0} if use_gpu else {})}
    trainer = TorchTrainer(
        sft_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "dataset": ray.put(dataset),
            "output": str(output),
            "use_gpu": use_gpu,
            **held_out,
        },
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(name=run_id, storage_path=str(output / "ray")),
    )
    follower = MetricsFollower(output / "metrics.jsonl", on_metrics) if on_metrics else contextlib.nullcontext()
    with follower:
        trainer.fit()
    metrics = read_metrics(output)
    final = output / FINAL_DIR
    adapter = final / "adapter"
    return SFTResult(
        run_id=run_id,
        output_dir=output,
        model_dir=final / "model",
        adapter_dir=adapter if adapter.exists() else None,
        steps=max((int(row["step"]) for row in metrics), default=0),
        metrics=metrics,
        seconds=time.perf_counter() - started,
    )


def _check_chat_template(cfg: SFTConfig, example: dict[str, Any]) -> None:
    """Chat examples need the model's chat template; find out now rather than on a worker."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, local_files_only=_is_local(cfg.model.path))
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"model {cfg.model.path!r}: no tokenizer could be loaded ({exc})", field="model.path"
        ) from exc
    conversational = "messages" in example or isinstance(example.get("prompt"), list)
    if conversational and not tokenizer.chat_template:
        raise InvalidInput(
            f"model {cfg.model.path!r} has no chat template; set data.chat_template: false for prompt/completion "
            "rows, or use a chat model",
            field="data.chat_template",
        )


def _clear_previous_run(output: Path) -> None:
    """A new run in a used folder (a retried job) starts its metrics and model afresh."""
    import shutil

    (output / "metrics.jsonl").unlink(missing_ok=True)
    for folder in ("tensorboard", FINAL_DIR):
        shutil.rmtree(output / folder, ignore_errors=True)


def _is_local(path: str) -> bool:
    return Path(path).expanduser().is_dir()


# ---------------------------------------------------------------- workers (Ray Train)
def sft_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: TRL's SFTTrainer on this worker's shard; rank 0 logs and exports."""
    import ray
    import ray.train
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from deepext.eval.checks import build_check
    from deepext.grpo.learner import precision
    from deepext.train.learner_groups import record_learner_group

    cfg = SFTConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    output = Path(loop_config["output"])
    use_gpu: bool = loop_config["use_gpu"]
    if rank == 0:
        record_learner_group(output)
    if cfg.resources.threads_per_worker:
        torch.set_num_threads(cfg.resources.threads_per_worker)
    local = _is_local(cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, local_files_only=local)
    # Trained weights float32 under bfloat16 autocast (docs/grpo.md, "Precision"), as in GRPO.
    compute, weights = precision(cfg.model, torch.device("cuda" if use_gpu else "cpu"))
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=weights, local_files_only=local)
    dataset = ray.get(loop_config["dataset"])
    eval_dataset = ray.get(loop_config["eval_dataset"]) if "eval_dataset" in loop_config else None

    peft_config = None
    if cfg.model.lora is not None:
        from peft import LoraConfig

        lora = cfg.model.lora
        peft_config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
    log = MetricsLog(output) if rank == 0 else None
    callbacks = [_progress_callback(log, world)]
    if log is not None and loop_config.get("eval_checks"):
        checks = [build_check(spec) for spec in loop_config["eval_checks"]]
        callbacks.append(_suite_callback(log, tokenizer, loop_config["eval_prompts"], checks, cfg.training))
    with tempfile.TemporaryDirectory(prefix="deepext-sft-") as scratch:  # the Trainer wants a folder; it stays empty
        args = TRLSFTConfig(
            **trainer_arguments(cfg, scratch, use_gpu, prompt_completion="prompt" in dataset.column_names)
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        trainer.train()
    if log is not None:
        log.close()
        export(trainer.model, tokenizer, output / FINAL_DIR, dtype=compute)


def trainer_arguments(cfg: SFTConfig, output_dir: str, use_gpu: bool, *, prompt_completion: bool) -> dict[str, Any]:
    """TRL `SFTConfig` keyword arguments for a worker (a plain dict: testable without a worker)."""
    import torch

    from deepext.grpo.learner import resolve_dtype

    training, data = cfg.training, cfg.data
    compute = resolve_dtype(cfg.model.dtype, torch.device("cuda" if use_gpu else "cpu"))
    schedule: str = training.schedule
    if schedule == "constant" and training.warmup_steps:
        schedule = "constant_with_warmup"
    return {
        "output_dir": output_dir,
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps or -1,
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": schedule,
        "warmup_steps": training.warmup_steps,
        "weight_decay": training.weight_decay,
        "per_device_train_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.grad_accum,
        "max_grad_norm": training.grad_clip or 0.0,
        "gradient_checkpointing": training.gradient_checkpointing,
        "seed": training.seed,
        "data_seed": training.seed,
        "logging_strategy": "steps",
        "logging_steps": training.logging_steps,
        "logging_first_step": True,
        "max_length": data.max_length,
        "packing": data.packing,
        "completion_only_loss": data.completion_only_loss if prompt_completion else None,
        "use_cpu": not use_gpu,
        "bf16": compute == torch.bfloat16,  # autocast over the float32 weights
        "ddp_backend": None if use_gpu else "gloo",  # the group Ray Train created; accelerate joins it
        "ddp_find_unused_parameters": False,  # every trainable parameter gets a gradient: skip DDP's extra walk
        "eval_strategy": "steps" if training.eval_every else "no",
        "eval_steps": training.eval_every or None,
        "per_device_eval_batch_size": training.batch_size,
        "report_to": "none",
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def _progress_callback(log: MetricsLog | None, world: int) -> Any:
    """A TrainerCallback: every rank reports each logged row to Ray Train; rank 0 writes it.

    The Trainer logs on every rank with the loss already averaged over ranks, so every rank calls
    `ray.train.report` (a barrier) the same number of times.
    """
    import ray.train
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.since = time.perf_counter()
            self.since_step = 0
            self.since_tokens = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.since = time.perf_counter()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            now, step = time.perf_counter(), int(state.global_step)
            row = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if "loss" in row and step > self.since_step:
                elapsed = now - self.since
                row["time/step"] = elapsed / (step - self.since_step)
                if "num_tokens" in row:  # TRL counts the tokens of every rank
                    row["tokens_per_s"] = (row["num_tokens"] - self.since_tokens) / elapsed
                    self.since_tokens = row["num_tokens"]
                self.since, self.since_step = now, step
            if "train_runtime" in row:  # the Trainer's summary row at the end
                row["world_size"] = world
            if log is not None:
                log.write(step, row)
            ray.train.report({"step": step, **row})

    return Progress()


def held_out_prompts(
    examples: list[dict[str, Any]], rows: list[dict[str, Any]], limit: int, source: str
) -> list[tuple[Any, dict[str, Any]]]:
    """(prompt, row) of the first `limit` held-out examples: the prompt is a chat (a list of
    messages) or plain text, as the model will be asked; the row is what the checks read."""
    if "text" in examples[0]:
        raise InvalidInput(
            f"{source}: text rows have no prompt to answer; eval_suite needs prompt/completion or messages rows",
            field="training.eval_suite",
        )
    return [(example["prompt"], row) for example, row in zip(examples[:limit], rows, strict=False)]


def _suite_callback(
    log: MetricsLog, tokenizer: Any, prompts: list[tuple[Any, dict[str, Any]]], checks: list[Any], training: Any
) -> Any:
    """A TrainerCallback for rank 0: after each evaluation, greedy answers to the held-out prompts
    scored by the suite's checks (`eval/<check>_pass_rate`, `eval/<check>_score`)."""
    from transformers import TrainerCallback

    class SuiteChecks(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            started = time.perf_counter()
            texts = greedy_answers(model, tokenizer, [p for p, _ in prompts], training.eval_max_new_tokens)
            row: dict[str, Any] = {"eval/seconds": time.perf_counter() - started}
            for check in checks:
                results = [check.evaluate(text, data) for text, (_, data) in zip(texts, prompts, strict=True)]
                row[f"eval/{check.spec.name}_pass_rate"] = sum(r.passed for r in results) / len(results)
                row[f"eval/{check.spec.name}_score"] = sum(r.score for r in results) / len(results)
            log.write(int(state.global_step), row)

    return SuiteChecks()


def greedy_answers(model: Any, tokenizer: Any, prompts: list[Any], max_new_tokens: int, batch: int = 16) -> list[str]:
    """The model's greedy answer to each prompt (a chat or text), in batches with left padding."""
    import torch

    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
        for p in prompts
    ]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch):
                encoded = tokenizer(
                    texts[start : start + batch], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(model.device)
                out = model.generate(
                    **encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
                new = out[:, encoded["input_ids"].shape[1] :]
                answers += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def export(model: Any, tokenizer: Any, folder: Path, dtype: Any = None) -> dict[str, Path]:
    """The final model as Hugging Face folders: `model/` (full or merged, in `dtype` if given) and,
    with LoRA, `adapter/`."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folders = {}
    if hasattr(model, "merge_and_unload"):  # a PEFT model: the adapter, then the base with it merged in
        model.save_pretrained(folder / "adapter")
        tokenizer.save_pretrained(folder / "adapter")
        folders["adapter"] = folder / "adapter"
        model = model.merge_and_unload()  # in place: training is over
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    folders["model"] = folder / "model"
    return folders
