"""End to end: the GRPO example's tiny model before and after GRPO, evaluated, compared and gated.

Real parts throughout: the tiny model is SFT-warmed as in `examples/grpo_tiny_json`, registered as a
model version, trained further by a `grpo` job on Ray Jobs, evaluated by vLLM actors (the base
directly, the candidate as an `eval` job), and the gate CLI exits 0 one way and 1 the other.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from deepext.eval.runner import evaluate
from deepext.platform import Platform
from deepext.train import submit_job, wait_for_job
from tests.helpers import invoke_cli, lab_platform, scheduler_running

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpo_tiny_json" / "run.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grpo_tiny_json", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lab(tmp_path: Path, postgres_url: str, ray_session: str) -> Iterator[Platform]:
    platform = lab_platform(tmp_path, postgres_url, ray_session, "colors")
    try:
        with scheduler_running(platform):
            yield platform
    finally:
        platform.close()


def test_grpo_improves_the_tiny_model_and_the_gate_says_so_both_ways(
    lab: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepext.eval.suite import push_suite
    from deepext.models.registry import register_base_model
    from deepext.models.tiny import TinyModelSpec, create_tiny_model
    from deepext.models.versions import get_model_version, register_model_version

    ex = example()
    raw = create_tiny_model(
        tmp_path / "raw",
        TinyModelSpec(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512, seed=0),
    )
    register_base_model(lab, "tiny-raw", raw, actor="test")
    warm = tmp_path / "warm"
    import shutil

    shutil.copytree(raw, warm)
    ex.sft_warmup(warm, 70, 0)
    register_model_version(lab, project="colors", name="colors", folder=warm, base_model="tiny-raw", actor="test")
    lab.datasets.push("colors", "questions", ex.write_prompts(tmp_path / "questions.jsonl"), actor="test")

    suite = {
        "name": "color-json",
        "dataset": "colors/questions@1",
        "generation": {"max_new_tokens": 16},
        "checks": [
            {"name": "json", "type": "json_valid"},
            {"name": "schema", "type": "json_schema", "params": {"schema": ex.SCHEMA}},
            {
                "name": "right_color",
                "type": "rule",
                "severity": "warning",
                "params": {"rule": "consistency", "field": "answer", "row_field": "answer", "op": "eq"},
            },
            {  # a judge model on vLLM actors too; the raw tiny model cannot grade, so it only must not crash
                "name": "judge",
                "type": "llm_judge",
                "severity": "info",
                "params": {"rubric": "Is the color right?", "scale": "1-5", "pass_at": 4, "judge": "tiny-raw"},
            },
        ],
    }
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(suite), encoding="utf-8")
    push_suite(lab, "colors", suite_file, actor="test")

    config = ex.grpo_config(Path("colors@1"), tmp_path / "unused.jsonl", tmp_path / "unused", 20, 0)
    config["model"]["path"] = "colors@1"
    config["data"] = {"dataset": "colors/questions@1"}
    config["resources"] = {**config["resources"], "rollout_cpus": 0.5, "learner_cpus": 0.5, "threads_per_worker": 2}
    config["schedule"] = {**config["schedule"], "eval_every": 10, "eval_suite": "colors/color-json"}
    del config["output_dir"]
    trained = wait_for_job(
        lab, submit_job(lab, project="colors", kind="grpo", config=config, name="colors", actor="t").id, timeout=600
    )
    assert trained.state == "succeeded", trained.error
    from deepext.train import job_metrics

    suite_scores = [m["eval/schema_pass_rate"] for m in job_metrics(lab, trained.id) if "eval/schema_pass_rate" in m]
    assert len(suite_scores) >= 3  # steps 0, 10 and 20: the suite's checks ran during training
    candidate = get_model_version(lab, "colors", "colors@2")
    assert candidate.parent == "colors@1" and candidate.job_id == trained.id

    base_run = evaluate(lab, project="colors", suite="color-json", target="colors@1")
    job = submit_job(
        lab, project="colors", kind="eval", config={"suite": "color-json", "target": "colors@2"}, actor="t"
    )
    assert wait_for_job(lab, job.id, timeout=300).state == "succeeded"
    from deepext.eval.results import list_runs

    candidate_run = next(r for r in list_runs(lab, "colors") if r.job_id == job.id)
    assert base_run.examples_count == candidate_run.examples_count == 24
    print(f"\nbase {base_run.aggregates}\ncandidate {candidate_run.aggregates}")
    # Greedy answers are valid JSON already after the warm-up; GRPO taught some of the colors.
    right = [run.aggregates["checks"]["right_color"]["pass_rate"] for run in (base_run, candidate_run)]
    assert right[1] > right[0] and (candidate_run.score or 0) > (base_run.score or 0)
    from deepext.eval.results import run_examples

    judged = run_examples(lab, base_run.id)[0]
    assert judged.input["__judgement__judge"] and judged.checks["judge"].reason  # the verdict text and its reading

    gate = ["eval", "gate", "--project", "colors", "--max-drop", "0.01"]
    code, output = invoke_cli(
        lab, monkeypatch, *gate, "--baseline", str(base_run.id), "--candidate", str(candidate_run.id)
    )
    assert code == 0, output
    code, output = invoke_cli(
        lab, monkeypatch, *gate, "--baseline", str(candidate_run.id), "--candidate", str(base_run.id)
    )
    assert code == 1, output
    code, output = invoke_cli(
        lab, monkeypatch, "eval", "compare", "--project", "colors", str(base_run.id), str(candidate_run.id)
    )
    assert code == 0 and "schema" in output
    json.dumps(candidate_run.aggregates)  # stored aggregates are plain JSON
