"""Comparing jobs: flat config rows with differences marked, metric curves per job (pure), the REST
route with its limits, `deepext jobs compare` and its SVG plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepext.plots import svg_panels
from deepext.train.compare import Comparison, compare_jobs, config_rows, flatten, metric_series, plotted_series
from deepext.train.jobs import create_job, report_metrics
from tests.helpers import invoke_cli
from tests.serve.conftest import Api


def test_configs_flatten_to_dotted_fields() -> None:
    config = {"sampling": {"group_size": 4, "extra": {}}, "rewards": [{"name": "a"}, {"name": "b", "weight": 2}]}
    assert flatten(config) == {
        "sampling.group_size": 4,
        "sampling.extra": {},
        "rewards[0].name": "a",
        "rewards[1].name": "b",
        "rewards[1].weight": 2,
    }


def test_rows_mark_a_field_that_differs_or_is_missing_in_one_config() -> None:
    rows = config_rows([{"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"b": 1}}])
    assert [(r.field, r.values, r.differs) for r in rows] == [("a.b", [1, 1, 1], False), ("a.c", [2, 3, None], True)]
    # A field set to None in one config and absent in the other still differs: one says it, one does not.
    assert config_rows([{"x": None}, {}])[0].differs


def test_metric_series_keep_each_jobs_numbers_in_step_order() -> None:
    rows = {
        7: [{"step": 1, "at": None, "reward_mean": 0.5, "note": "x", "done": True}, {"step": 2, "reward_mean": 0.75}],
        9: [{"step": 1, "loss": 2}],
    }
    assert metric_series(rows) == {"loss": {"9": [[1, 2.0]]}, "reward_mean": {"7": [[1, 0.5], [2, 0.75]]}}
    comparison = Comparison(jobs=[], rows=[], series=metric_series(rows))
    plots = plotted_series(comparison)
    assert plots["reward"] == {"#7 reward_mean": [[1, 0.5], [2, 0.75]]} and plots["kl"] == {}
    svg = svg_panels(plots)
    assert svg.count("<polyline") == 2 and "#7 reward_mean" in svg and "no data" in svg  # kl has none


def _two_runs(api: Api) -> tuple[int, int]:
    platform = api.platform
    config = {
        "model": {"path": "tiny"},
        "sampling": {"group_size": 4, "temperature": 1.0},
        "optim": {"learning_rate": 1e-5},
    }
    first = create_job(platform, project="p", kind="grpo", config=config, resources={}, actor="owner")
    other = {**config, "optim": {"learning_rate": 3e-5}}
    second = create_job(
        platform, project="p", kind="grpo", config=other, resources={}, actor="owner", profile="small@2"
    )
    for step, (a, b) in enumerate([(0.1, 0.2), (0.3, 0.6), (0.4, 0.9)], start=1):
        report_metrics(platform, first.id, step, {"reward_mean": a, "loss": 1 - a, "kl": a / 10})
        report_metrics(platform, second.id, step, {"reward_mean": b, "loss": 1 - b, "kl": b / 10})
    return first.id, second.id


def test_compare_over_the_api_and_its_limits(api: Api) -> None:
    first, second = _two_runs(api)
    answer = api.call("GET", "/projects/p/jobs/compare", "viewer", params={"ids": [first, second]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    differing = {row["field"]: row["values"] for row in body["rows"] if row["differs"]}
    assert differing == {"profile": [None, "small@2"], "optim.learning_rate": [1e-5, 3e-5]}
    assert body["series"]["reward_mean"][str(second)] == [[1, 0.2], [2, 0.6], [3, 0.9]]

    other = create_job(api.platform, project="q", kind="grpo", config={}, resources={}, actor="outsider").id
    for ids, status, field in (([first], 422, "ids"), ([first] * 2, 422, "ids"), ([1, 2, 3, 4, 5, 6], 422, "ids")):
        refused = api.call("GET", "/projects/p/jobs/compare", "viewer", params={"ids": ids})
        assert refused.status_code == status and refused.json()["error"]["field"] == field, refused.text
    assert api.call("GET", "/projects/p/jobs/compare", "viewer", params={"ids": [first, other]}).status_code == 404
    assert api.call("GET", "/projects/p/jobs/compare", "viewer", params={"ids": [first, "x"]}).status_code == 422


def test_cli_compare_prints_the_differences_and_writes_the_plot(
    api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, second = _two_runs(api)
    plot = tmp_path / "runs.svg"
    code, output = invoke_cli(
        api.platform, monkeypatch, "jobs", "compare", str(first), str(second), "--project", "p", "--plot", str(plot)
    )
    assert code == 0, output
    assert "optim.learning_rate" in output and "3e-05" in output and "small@2" in output
    assert "sampling.group_size" not in output  # the same in both: shown only with --all
    assert "reward_mean" in output and "0.9" in output  # the last value of each metric
    assert plot.read_text().count("<polyline") == 6  # reward, loss and kl for each job
    code, output = invoke_cli(api.platform, monkeypatch, "jobs", "compare", str(first), str(second), "-p", "p", "--all")
    assert code == 0 and "sampling.group_size" in output
    code, output = invoke_cli(api.platform, monkeypatch, "jobs", "compare", str(first), "-p", "p")
    assert code != 0 and "compare 2 to 5 different jobs" in output
    assert compare_jobs(api.platform, "p", [second, first]).jobs[0].id == second  # the order asked for
