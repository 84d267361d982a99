"""SFT with TRL on Ray Train: configs and rows fail early naming what is wrong; runs learn and export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from deepext.errors import DatasetFormatError, InvalidInput, NotFound
from deepext.train.context import MetricsFollower
from deepext.train.sft import (
    SFTDataSettings,
    detect_format,
    load_sft_config,
    parse_sft_config,
    to_examples,
    train_sft,
    trainer_arguments,
)

BASE: dict[str, Any] = {"model": {"path": "/models/tiny"}, "data": {"path": "rows.jsonl"}}


def chat_rows(count: int = 32) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"The answer is {2 * i}."},
            ]
        }
        for i in range(count)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def data(**fields: Any) -> SFTDataSettings:
    return SFTDataSettings.model_validate({"path": "rows.jsonl", **fields})


# ---------------------------------------------------------------- config (fast)
def test_a_minimal_config_gets_sensible_defaults_and_a_stable_digest() -> None:
    cfg = parse_sft_config(BASE)
    assert cfg.data.format == "auto" and cfg.data.completion_only_loss and cfg.data.chat_template
    assert cfg.training.max_steps == 0 and cfg.training.epochs == 1.0
    assert cfg.resources.num_workers == 1 and cfg.resources.use_gpu is None
    assert cfg.digest() == parse_sft_config(BASE).digest()
    assert cfg.digest() != parse_sft_config({**BASE, "training": {"learning_rate": 1e-4}}).digest()
    assert parse_sft_config(cfg) is cfg


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({**BASE, "training": {"batch_size": 0}}, "training.batch_size"),
        ({**BASE, "training": {"lr": 0.1}}, "training.lr"),
        ({**BASE, "training": {"schedule": "exponential"}}, "training.schedule"),
        ({**BASE, "data": {"path": "a.jsonl", "format": "chat"}}, "data.format"),
        ({**BASE, "data": {"path": "a.jsonl", "dataset": "p/d@1"}}, "data"),
        ({**BASE, "data": {}}, "data"),
        ({**BASE, "resources": {"num_workers": 0}}, "resources.num_workers"),
        ({**BASE, "model": {"path": "m", "lora": {"rank": 0}}}, "model.lora.rank"),
        ({"data": {"path": "a.jsonl"}}, "model"),
    ],
)
def test_a_wrong_config_field_is_named(config: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_sft_config(config)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_a_yaml_config_loads_and_its_errors_name_the_file_and_field(tmp_path: Path) -> None:
    good = tmp_path / "sft.yaml"
    good.write_text("model: {path: /m}\ndata: {path: rows.jsonl, packing: true}\ntraining: {max_steps: 5}\n")
    assert load_sft_config(good).training.max_steps == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {path: /m}\ndata: {path: rows.jsonl}\ntraining: {grad_accum: -1}\n")
    with pytest.raises(InvalidInput, match=r"bad\.yaml") as caught:
        load_sft_config(bad)
    assert caught.value.field == "training.grad_accum"


# ---------------------------------------------------------------- rows (fast)
@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "prompt": "x"}, "messages"),
        ({"prompt": "p", "completion": "c", "text": "t"}, "prompt_completion"),
        ({"text": "t", "prompt": "p"}, "text"),
    ],
)
def test_auto_detects_the_format_from_the_first_rows_fields(row: dict[str, Any], expected: str) -> None:
    assert detect_format(row, data()) == expected


def test_field_names_and_the_format_can_be_set() -> None:
    settings = data(prompt_field="question", completion_field="answer", chat_template=False)
    assert to_examples([{"question": "2+2?", "answer": "4", "id": 7}], settings) == [
        {"prompt": "2+2?", "completion": "4"}
    ]
    assert detect_format({"prompt": "p", "completion": "c"}, data(format="text")) == "text"


def test_an_undetectable_first_row_names_row_1_and_the_expected_fields() -> None:
    with pytest.raises(DatasetFormatError, match="row 1") as caught:
        to_examples([{"question": "q"}], data(), "rows.jsonl")
    assert caught.value.row == 1 and caught.value.field == "data.format"
    assert "'messages'" in str(caught.value) and "'text'" in str(caught.value)
    with pytest.raises(DatasetFormatError, match="row 1"):
        to_examples([["not", "an", "object"]], data(), "rows.jsonl")  # type: ignore[list-item]


def test_prompt_completion_rows_become_a_user_assistant_chat_with_the_system_prompt() -> None:
    rows = [{"prompt": "Say red.", "completion": "red"}]
    assert to_examples(rows, data(system_prompt="Be brief.")) == [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say red."}],
            "completion": [{"role": "assistant", "content": "red"}],
        }
    ]
    assert to_examples(rows, data(chat_template=False)) == [{"prompt": "Say red.", "completion": "red"}]


def test_a_chat_learns_its_last_assistant_reply_or_the_whole_conversation() -> None:
    chat = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2", "name": "bot"},  # extra keys are dropped
    ]
    [split] = to_examples([{"messages": chat}], data())
    assert split["prompt"] == chat[:4] and split["completion"] == [{"role": "assistant", "content": "a2"}]
    [whole] = to_examples([{"messages": chat}], data(completion_only_loss=False))
    assert whole == {"messages": [*chat[:4], {"role": "assistant", "content": "a2"}]}


@pytest.mark.parametrize(
    ("bad_row", "settings", "words", "field"),
    [
        ({"prompt": "p"}, {}, ["'completion'", "missing"], "data.completion_field"),
        ({"prompt": "p", "completion": 4}, {}, ["'completion'", "int"], "data.completion_field"),
        ({"prompt": "", "completion": "c"}, {}, ["'prompt'", "non-empty"], "data.prompt_field"),
        ({"text": ["a"]}, {"format": "text"}, ["'text'", "list"], "data.text_field"),
        ({"messages": "hi"}, {"format": "messages"}, ["'messages'", "str"], "data.messages_field"),
        (
            {"messages": [{"role": "robot", "content": "x"}]},
            {"format": "messages"},
            ["message 0", "'robot'"],
            "data.messages_field",
        ),
        (
            {"messages": [{"role": "user", "content": None}]},
            {"format": "messages"},
            ["'content' must be text"],
            "data.messages_field",
        ),
        (
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"format": "messages"},
            ["last message must be an assistant reply"],
            "data.completion_only_loss",
        ),
    ],
)
def test_a_bad_row_names_its_number_and_field(
    bad_row: dict[str, Any], settings: dict[str, Any], words: list[str], field: str
) -> None:
    kind = settings.get("format", "prompt_completion")
    good = {
        "prompt_completion": {"prompt": "p", "completion": "c"},
        "text": {"text": "t"},
        "messages": chat_rows(1)[0],
    }[kind]
    with pytest.raises(DatasetFormatError) as caught:
        to_examples([good, good, bad_row, good], data(**settings), "rows.jsonl")
    assert caught.value.row == 3 and caught.value.file == "rows.jsonl"
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)


def test_a_bad_row_fails_before_ray_train_starts(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray.train.torch

    def no_trainer(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray Train must not start")

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", no_trainer)
    rows = write_jsonl(tmp_path / "rows.jsonl", [*chat_rows(4), {"messages": [{"role": "user"}]}])
    config = {"model": {"path": str(tiny_model)}, "data": {"path": str(rows)}, "output_dir": str(tmp_path / "run")}
    with pytest.raises(DatasetFormatError, match="row 5"):
        train_sft(config)
    assert not (tmp_path / "run").exists()


def test_chat_rows_need_a_chat_template(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.train.torch

    class Started(Exception):
        pass

    def trainer(*args: Any, **kwargs: Any) -> None:
        raise Started

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", trainer)
    monkeypatch.setattr("ray.is_initialized", lambda: True)  # no Ray is needed to reach the trainer
    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr("ray.put", lambda value: value)
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((plain / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "Say red.", "completion": "red"}])
    config = {"model": {"path": str(plain)}, "data": {"path": str(rows)}, "output_dir": str(tmp_path / "run")}
    with pytest.raises(InvalidInput) as caught:
        train_sft(config)
    assert caught.value.field == "data.chat_template"
    with pytest.raises(Started):  # plain prompt/completion text needs no template
        train_sft({**config, "data": {"path": str(rows), "chat_template": False}})


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", chat_rows(2))
    config = {"model": {"path": str(tmp_path / "nowhere")}, "data": {"path": str(rows)}}
    with pytest.raises(InvalidInput) as caught:
        train_sft({**config, "output_dir": str(tmp_path / "run")})
    assert caught.value.field == "model.path"


def test_trainer_arguments_map_the_config_onto_trl() -> None:
    import dataclasses

    from trl import SFTConfig as TRLSFTConfig

    cfg = parse_sft_config(
        {**BASE, "training": {"schedule": "constant", "warmup_steps": 3, "grad_clip": None, "max_steps": 0}}
    )
    cpu = trainer_arguments(cfg, "/tmp/x", False, prompt_completion=False)
    assert set(cpu) <= {field.name for field in dataclasses.fields(TRLSFTConfig)}
    assert cpu["lr_scheduler_type"] == "constant_with_warmup" and cpu["max_steps"] == -1
    assert cpu["max_grad_norm"] == 0.0 and cpu["completion_only_loss"] is None
    assert cpu["use_cpu"] and not cpu["bf16"] and cpu["ddp_backend"] == "gloo"
    assert cpu["report_to"] == "none" and cpu["save_strategy"] == "no" and cpu["dataloader_num_workers"] == 0
    gpu = trainer_arguments(
        parse_sft_config({**BASE, "training": {"max_steps": 5}}), "/x", True, prompt_completion=True
    )
    assert gpu["bf16"] and not gpu["use_cpu"] and gpu["ddp_backend"] is None
    assert gpu["max_steps"] == 5 and gpu["completion_only_loss"] is True and gpu["lr_scheduler_type"] == "linear"
    on_cpu = parse_sft_config({**BASE, "model": {**BASE["model"], "dtype": "bfloat16"}})
    assert trainer_arguments(on_cpu, "/x", False, prompt_completion=False)["bf16"]  # AMX CPUs: twice as fast


# ---------------------------------------------------------------- metrics follower (fast)
def test_the_metrics_follower_hands_over_complete_rows_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    seen: list[tuple[int, dict[str, Any]]] = []
    follower = MetricsFollower(path, lambda step, row: seen.append((step, row)), interval=0.01)
    follower.poll()  # no file yet: nothing to do
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    follower.poll()
    assert seen == [(1, {"loss": 2.0})]  # the half-written row waits
    with open(path, "a") as out:
        out.write('ss": 1.5}\n')
    with follower:
        pass
    assert seen == [(1, {"loss": 2.0}), (2, {"loss": 1.5})]


# ---------------------------------------------------------------- runs on Ray Train (slow)
def run_config(model_dir: Path, rows: Path, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "tiny-sft",
        "model": {"path": str(model_dir)},
        "data": {"path": str(rows), "max_length": 64},
        "training": {"max_steps": 8, "batch_size": 8, "learning_rate": 3e-3, "logging_steps": 2},
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "threads_per_worker": 2},
        "output_dir": str(tmp_path / "run"),
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def losses(metrics: list[dict[str, Any]]) -> list[float]:
    return [row["loss"] for row in metrics if "loss" in row]


@pytest.mark.slow
def test_a_full_sft_run_learns_and_exports_a_model_that_generates(
    ray_session: Any, tiny_model: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = write_jsonl(tmp_path / "chat.jsonl", chat_rows(32))
    seen: list[int] = []
    result = train_sft(run_config(tiny_model, rows, tmp_path), run_id="full", on_metrics=lambda s, m: seen.append(s))

    assert result.steps == 8 and result.adapter_dir is None
    assert result.model_dir == tmp_path / "run" / "final" / "model"
    logged = [row for row in result.metrics if "loss" in row]
    assert [row["step"] for row in logged] == [1, 2, 4, 6, 8]
    assert logged[-1]["loss"] < logged[0]["loss"] - 0.5
    for key in ("learning_rate", "grad_norm", "epoch", "tokens_per_s", "time/step"):
        assert key in logged[-1], key
    assert result.metrics[-1]["world_size"] == 1 and "train_runtime" in result.metrics[-1]
    assert seen == [row["step"] for row in result.metrics]  # on_metrics saw every row, in order
    assert list((result.output_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (result.output_dir / "config.yaml").exists()

    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(result.model_dir)
    encoded: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3 plus 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    ids = encoded["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > ids.shape[1]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_lora_run_on_two_workers_writes_the_adapter_and_a_merged_model(
    ray_session: Any, tiny_model: Path, tmp_path: Path, dtype: str
) -> None:
    import torch
    from safetensors.torch import load_file

    rows = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": f"Say {w}.", "completion": w} for w in ["red", "blue"] * 16]
    )
    config = run_config(
        tiny_model,
        rows,
        tmp_path,
        model={"lora": {"rank": 4, "alpha": 8}, "dtype": dtype},
        training={"max_steps": 4, "learning_rate": 1e-2},
        resources={"num_workers": 2, "cpus_per_worker": 1, "threads_per_worker": 1},
    )
    result = train_sft(config, run_id="lora")

    # 32 rows, 8 per worker per step, 2 workers: 4 steps are 2 epochs (1 epoch with one worker).
    assert result.metrics[-1]["world_size"] == 2
    assert [row["epoch"] for row in result.metrics if "loss" in row][-1] == 2.0
    assert result.adapter_dir is not None
    adapter = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(tiny_model)
    merged = load_file(str(result.model_dir / "model.safetensors"))
    base = load_file(str(tiny_model / "model.safetensors"))
    assert set(merged) == set(base)  # a plain model: no LoRA tensors left
    assert {tensor.dtype for tensor in merged.values()} == {getattr(torch, dtype)}
    name = next(k for k in base if k.endswith("q_proj.weight"))
    assert not merged[name].equal(base[name].to(merged[name].dtype))  # the adapter is merged in
    assert (result.model_dir / "tokenizer.json").exists()
    assert losses(result.metrics)[-1] < losses(result.metrics)[0]


def test_evaluation_settings_need_held_out_rows_and_steps() -> None:
    with pytest.raises(InvalidInput, match=r"data\.eval_dataset or data\.eval_path"):
        parse_sft_config({**BASE, "training": {"eval_every": 2}})
    with pytest.raises(InvalidInput, match="eval_every"):
        parse_sft_config(
            {**BASE, "data": {"path": "a.jsonl", "eval_path": "b.jsonl"}, "training": {"eval_suite": "p/s"}}
        )
    cfg = parse_sft_config({**BASE, "data": {"path": "a.jsonl", "eval_path": "b.jsonl"}, "training": {"eval_every": 4}})
    arguments = trainer_arguments(cfg, "/tmp/x", False, prompt_completion=True)
    assert arguments["eval_strategy"] == "steps" and arguments["eval_steps"] == 4


def test_the_suite_callback_scores_greedy_answers_to_held_out_prompts(tiny_model: Path, tmp_path: Path) -> None:
    """What an SFT run's rank 0 does after each evaluation, on a real (tiny) model without Ray."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deepext.eval.checks import build_check
    from deepext.eval.suite import parse_suite
    from deepext.grpo.metrics import MetricsLog, read_metrics
    from deepext.train.sft import _suite_callback, held_out_prompts

    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"{2 * i}", "answer": str(2 * i)} for i in range(3)]
    checks = [
        {"name": "sum", "type": "exact_match"},
        {"name": "digits", "type": "regex", "params": {"pattern": "^[0-9]+$"}},
    ]
    specs = parse_suite({"name": "sums", "dataset": "held@1", "checks": checks}).check_specs()
    cfg = parse_sft_config({**BASE, "data": {"path": "a.jsonl", "eval_path": "b.jsonl"}, "training": {"eval_every": 4}})
    prompts = held_out_prompts(to_examples(rows, cfg.data), rows, 2, "held.jsonl")
    assert [p for p, _ in prompts] == [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(2)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).train()
    log = MetricsLog(tmp_path)
    callback = _suite_callback(log, tokenizer, prompts, [build_check(spec) for spec in specs], cfg.training)
    callback.on_evaluate(None, SimpleNamespace(global_step=4), None, model=model)
    log.close()
    (row,) = read_metrics(tmp_path)
    assert row["step"] == 4 and model.training  # scored, and the model is back in training mode
    for name in ("sum", "digits"):
        assert 0.0 <= row[f"eval/{name}_pass_rate"] <= 1.0 and 0.0 <= row[f"eval/{name}_score"] <= 1.0
    with pytest.raises(InvalidInput, match="text rows"):
        held_out_prompts([{"text": "x"}], [{"text": "x"}], 2, "held.jsonl")


def test_a_missing_eval_suite_is_named(platform: Any) -> None:
    from deepext.eval.suite import load_suite_checks
    from deepext.projects import create_project

    with platform.db.session() as session:
        create_project(session, name="lab", actor="test")
    with pytest.raises(NotFound, match="nope"):
        load_suite_checks("lab/nope", platform, "training.eval_suite")
    with pytest.raises(InvalidInput, match="PROJECT/NAME"):
        load_suite_checks("nope", platform, "training.eval_suite")
