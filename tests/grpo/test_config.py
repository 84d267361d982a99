"""GRPO configs fail before any work starts, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepext.errors import InvalidInput
from deepext.grpo.config import load_config, parse_config

BASE = {
    "model": {"path": "/models/tiny"},
    "data": {"path": "prompts.jsonl"},
    "rewards": [{"name": "exact_match"}],
}


def with_(**sections: dict) -> dict:
    config = {**BASE}
    for name, value in sections.items():
        config[name] = value
    return config


def test_a_minimal_config_gets_sensible_defaults() -> None:
    cfg = parse_config(BASE)
    assert cfg.sampling.group_size == 8
    assert cfg.algorithm.loss_agg == "token-mean"
    assert cfg.schedule.steps == 100
    assert len(cfg.digest()) == 64 and cfg.digest() == parse_config(BASE).digest()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (with_(sampling={"group_size": 1}), "sampling.group_size"),
        (with_(sampling={"temperature": 0}), "sampling.temperature"),
        (with_(algorithm={"loss_agg": "mean"}), "algorithm.loss_agg"),
        (with_(algorithm={"kl_coef": -1}), "algorithm.kl_coef"),
        (with_(optim={"learning_rate": 0}), "optim.learning_rate"),
        (with_(schedule={"steps": 10, "epochs": 1}), "schedule"),
        (with_(data={"path": "a.jsonl", "dataset": "p/d@1"}), "data"),
        (with_(model={"path": "x", "lora": {"rank": 0}}), "model.lora.rank"),
        (with_(resources={"num_learners": 0}), "resources.num_learners"),
        (with_(resources={"rollout_resources": {"GPU": 1}}), "resources.rollout_resources"),
        (with_(resources={"learner_resources": {"trainer_node": 0}}), "resources.learner_resources"),
        (with_(sampling={"group_sise": 4}), "sampling.group_sise"),
        ({**BASE, "rewards": []}, "rewards"),
    ],
)
def test_wrong_fields_are_named(config: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config(config)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_unknown_reward_fails_at_parse_time() -> None:
    with pytest.raises(InvalidInput, match=r"rewards\[1\]\.name"):
        parse_config({**BASE, "rewards": [{"name": "exact_match"}, {"name": "no_such_reward"}]})
    with pytest.raises(InvalidInput, match="nonexistent_module"):
        parse_config({**BASE, "rewards": [{"name": "nonexistent_module:score"}]})


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: {path: m}\ndata: {path: d.jsonl}\nrewards: [{name: regex}]\n")
    with pytest.raises(InvalidInput, match=r"run\.yaml: .*pattern"):
        load_config(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(InvalidInput, match=r"run\.yaml"):
        load_config(path)


def test_placement_no_live_node_offers_is_refused_before_anything_starts(
    ray_session: str, tiny_model: Path, tmp_path: Path
) -> None:
    from deepext.grpo.loop import train
    from tests.grpo.test_learners import run_config

    config = run_config(tiny_model, tmp_path, resources={"rollout_resources": {"rollout_node": 1}})
    with pytest.raises(
        InvalidInput, match="no node of the Ray cluster offers 1 of the resource 'rollout_node'"
    ) as caught:
        train(config)
    assert caught.value.field == "resources.rollout_resources"
    assert not (tmp_path / "run" / "ray").exists()  # no trainer was started
