"""Comparing 2-5 jobs of a project: their configs side by side with the fields that differ marked,
and every metric's curve per job on shared steps (the app overlays reward, loss and KL; the CLI
prints the last values and writes the curves as an SVG).

Configs are compared as flat dotted fields (`sampling.group_size`, `rewards[0].name`), so a
difference deep in a section shows as one row, not as two unequal sections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from deepext.errors import InvalidInput, NotFound
from deepext.platform import Platform
from deepext.train.jobs import JobView, get_job, job_metrics

MIN_JOBS, MAX_JOBS = 2, 5
# What the overlaid plots draw: plot name -> the metric keys it takes (GRPO's names; SFT logs loss too).
PLOTTED: dict[str, re.Pattern[str]] = {
    "reward": re.compile(r"^reward(_mean|/.+_mean)$"),
    "loss": re.compile(r"^(train_)?loss$|^eval_loss$"),
    "kl": re.compile(r"^kl(_mean)?$"),
}


@dataclass(frozen=True)
class ConfigRow:
    field: str
    values: list[Any]  # one per job, None where that job's config lacks the field
    differs: bool


@dataclass(frozen=True)
class Comparison:
    jobs: list[JobView]
    rows: list[ConfigRow]
    # metric -> job id (as text, a JSON key) -> [[step, value], ...] in step order
    series: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    @property
    def differing(self) -> list[ConfigRow]:
        return [row for row in self.rows if row.differs]


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested sections and lists as dotted fields: `{"a": {"b": 1}, "r": [{"n": "x"}]}` ->
    `{"a.b": 1, "r[0].n": "x"}`; an empty section or list stays one field."""
    if isinstance(config, dict) and config:
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(config, list) and config:
        flat = {}
        for index, value in enumerate(config):
            flat.update(flatten(value, f"{prefix}[{index}]"))
        return flat
    return {prefix: config}


def config_rows(configs: list[dict[str, Any]]) -> list[ConfigRow]:
    """Every field any of the configs has, in first-seen order, with each config's value."""
    flats = [flatten(config) for config in configs]
    fields = list(dict.fromkeys(key for flat in flats for key in flat))
    rows = []
    for name in fields:
        values = [flat.get(name) for flat in flats]
        present = [name in flat for flat in flats]
        differs = not all(present) or any(value != values[0] for value in values[1:])
        rows.append(ConfigRow(name, values, differs))
    return rows


def metric_series(rows_by_job: dict[int, list[dict[str, Any]]]) -> dict[str, dict[str, list[list[float]]]]:
    """Metric rows (`{"step", **values}`) per job -> every numeric metric's points per job."""
    series: dict[str, dict[str, list[list[float]]]] = {}
    for job_id, rows in rows_by_job.items():
        for row in rows:
            for key, value in row.items():
                if key in ("step", "at") or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                series.setdefault(key, {}).setdefault(str(job_id), []).append([row["step"], float(value)])
    return dict(sorted(series.items()))


def check_ids(ids: list[int]) -> list[int]:
    unique = list(dict.fromkeys(ids))
    if not MIN_JOBS <= len(unique) <= MAX_JOBS:
        raise InvalidInput(f"compare {MIN_JOBS} to {MAX_JOBS} different jobs, not {len(unique)}", field="ids")
    return unique


def compare_jobs(platform: Platform, project: str, ids: list[int]) -> Comparison:
    """The jobs' configs (with kind and profile as the first rows) and their metric curves."""
    jobs = []
    for job_id in check_ids(ids):
        job = get_job(platform, job_id)
        if job.project != project:
            raise NotFound(f"job {job_id} does not exist in project {project}")
        jobs.append(job)
    described = [{"kind": job.kind, "profile": job.profile, **job.config} for job in jobs]
    series = metric_series({job.id: job_metrics(platform, job.id) for job in jobs})
    return Comparison(jobs=jobs, rows=config_rows(described), series=series)


def plotted_series(comparison: Comparison) -> dict[str, dict[str, list[list[float]]]]:
    """The overlaid plots' curves: plot name -> `#ID metric` -> points (a GRPO job's reward_mean and
    a reward function's own mean both land on the reward plot)."""
    plots: dict[str, dict[str, list[list[float]]]] = {name: {} for name in PLOTTED}
    for metric, per_job in comparison.series.items():
        for plot, pattern in PLOTTED.items():
            if pattern.match(metric):
                for job_id, points in per_job.items():
                    plots[plot][f"#{job_id} {metric}"] = points
    return plots
