"""Hyperparameter sweeps: a `sweep` job runs one SFT or GRPO config many times with different values
of some of its fields, as Ray Tune trials on the cluster, and registers the best trial's model.

    kind: grpo                      # the base config's kind: grpo or sft
    base: {...}                     # a complete config of that kind (what a single job would run)
    search_space:                   # dotted field path -> one domain
      optim.learning_rate: {loguniform: [1.0e-6, 1.0e-4]}
      algorithm.kl_coef: {choice: [0.0, 0.05]}
      sampling.group_size: {grid: [4, 8]}
      sampling.temperature: {uniform: [0.7, 1.2]}
    metric: reward_mean             # a training metric every step reports
    mode: max
    trials: 6                       # samples of the space (a grid multiplies them)
    concurrency: 2                  # trials at once
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}   # or {type: fifo}: no early stop
    keep_weights: false             # keep only the best trial's model
    seed: 7                         # the same seed samples the same trials

Each trial is the same training function a single job runs (`deepext.grpo.train`, `train_sft`), in a
Tune trial whose Ray Train learners and vLLM rollout actors it owns: when ASHA stops a trial, Tune
ends its actor and everything the trial started goes with it. A trial reports each step's metrics;
the sweep's Tune callback (in the job's entry point) writes them as the job's metrics (`trial`,
`trial_step` and the values) and keeps each trial's row in `sweep_trials` (state, values tried,
latest metrics). The space is checked before any trial starts: every path must be a field of the
base config that takes the domain's values.
"""

from __future__ import annotations

import copy
import logging
import math
import queue
import shutil
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray.tune import Callback

from deepext.errors import InvalidInput, invalid_config
from deepext.train.learner_groups import release_job_leftovers, release_learner_group
from deepext.train.trials import record_trial

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Domain(_Strict):
    """Where one field's values come from: exactly one of the four."""

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Domain:
        given = [name for name in ("choice", "grid", "uniform", "loguniform") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, grid, uniform, loguniform")
        values = self.choice if self.choice is not None else self.grid
        if values is not None and not values:
            raise ValueError(f"{given[0]} needs at least one value")
        bounds = self.uniform or self.loguniform
        if bounds is not None:
            low, high = bounds
            if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise ValueError(f"{given[0]} needs low < high, got [{low}, {high}]")
            if self.loguniform is not None and low <= 0:
                raise ValueError(f"loguniform needs low > 0, got {low}")
        return self

    def samples(self) -> list[Any]:
        """Values that stand for the domain when the space is checked (each end of a range)."""
        if self.choice is not None:
            return list(self.choice)
        if self.grid is not None:
            return list(self.grid)
        low, high = self.uniform or self.loguniform or (0.0, 0.0)
        return [low, high]

    def tune(self) -> Any:
        from ray import tune

        if self.choice is not None:
            return tune.choice(self.choice)
        if self.grid is not None:
            return tune.grid_search(self.grid)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        assert self.loguniform is not None
        return tune.loguniform(*self.loguniform)


class SchedulerSettings(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1, description="Steps every trial runs before ASHA may stop it.")
    reduction_factor: float = Field(2, gt=1, description="ASHA keeps about 1/reduction_factor at each rung.")


class SweepConfig(_Strict):
    name: str = "sweep"
    kind: Literal["grpo", "sft"]
    base: dict[str, Any]
    search_space: dict[str, Domain] = Field(..., min_length=1)
    metric: str = "reward_mean"
    mode: Literal["max", "min"] = "max"
    trials: int = Field(6, ge=1, le=1000)
    concurrency: int = Field(2, ge=1, le=256)
    scheduler: SchedulerSettings = SchedulerSettings()
    keep_weights: bool = False
    seed: int | None = Field(None, description="Seeds the sampling of the space: the same seed, the same trials.")


def parse_sweep(config: dict[str, Any]) -> SweepConfig:
    """The sweep config with its space checked against the base config; InvalidInput names the field."""
    try:
        sweep = SweepConfig.model_validate(config)
    except ValidationError as exc:
        raise invalid_config("sweep config", exc) from exc
    parse = base_parser(sweep.kind)
    parse(sweep.base)  # the base alone must be a valid config (its errors name base fields)
    for path, domain in sweep.search_space.items():
        for value in domain.samples():
            try:
                parse(with_value(sweep.base, path, value))
            except InvalidInput as exc:
                raise InvalidInput(
                    f"search_space.{path}: {value!r} does not fit the {sweep.kind} config: {exc}",
                    field=f"search_space.{path}",
                ) from exc
    return sweep


def base_parser(kind: str) -> Any:
    if kind == "grpo":
        from deepext.grpo.config import parse_config

        return parse_config
    from deepext.train.sft import parse_sft_config

    return parse_sft_config


def with_value(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `config` with the dotted `path` set to `value` (sections created as needed); a path
    through a value that is not a section is refused."""
    result = copy.deepcopy(config)
    node = result
    parts = path.split(".")
    if not all(parts):
        raise InvalidInput(f"search_space.{path}: not a dotted field path", field=f"search_space.{path}")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidInput(f"search_space.{path}: {part!r} is not a section", field=f"search_space.{path}")
        node = child
    node[parts[-1]] = value
    return result


def total_steps(sweep: SweepConfig) -> int:
    """The steps a trial runs to the end (ASHA's max_t)."""
    cfg = base_parser(sweep.kind)(sweep.base)
    steps = cfg.schedule.steps if sweep.kind == "grpo" else cfg.training.max_steps
    if not steps:
        raise InvalidInput(f"a sweep needs a fixed number of steps in its base ({sweep.kind})", field="base")
    return int(steps)


# ---------------------------------------------------------------- running (in the job's entry point)
def run_sweep(ctx: Any, attempt: int) -> None:
    """Run the trials with Ray Tune; the best trial's model becomes what the job registers."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from deepext.train.jobs import report_metrics

    sweep = parse_sweep(ctx.config)
    base = {**sweep.base, "model": {**sweep.base["model"], "path": str(ctx.model_path)}}
    steps = total_steps(sweep)
    output = Path(ctx.output_dir)
    scheduler: Any = None
    if sweep.scheduler.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=steps,
            grace_period=min(sweep.scheduler.grace_period, steps),
            reduction_factor=sweep.scheduler.reduction_factor,
        )
    recorder = TrialRecorder(ctx.platform, ctx.job_id, steps, report_metrics, trials=output / "trials")
    trainable = tune.with_parameters(
        _trial, kind=sweep.kind, base=base, metric=sweep.metric, output=str(output / "trials")
    )
    tuner = tune.Tuner(
        # A sliver of a CPU (Tune refuses none): the trial only waits; its learners and rollout actors ask for theirs.
        tune.with_resources(trainable, {"cpu": 0.01}),
        param_space={path: domain.tune() for path, domain in sweep.search_space.items()},
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            num_samples=sweep.trials,
            # The generator keeps the concurrency: Tune ignores max_concurrent_trials beside a search_alg.
            search_alg=BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.concurrency),
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(name="sweep", storage_path=str(output / "tune"), callbacks=[recorder], verbose=0),
    )
    results = tuner.fit()
    for what in release_job_leftovers():
        log.warning("sweep %s: ended %s, left by a stopped trial", ctx.job_id, what)
    best = best_finished([results[i] for i in range(len(results))], sweep, output / "trials")
    best_id = str(best.metrics["trial_id"])
    best_run = output / "trials" / best_id / "run" / "final"
    ctx.saved_model = best_run / "model"
    ctx.saved_adapter = best_run / "adapter" if (best_run / "adapter").exists() else None
    ctx.final_metrics.update(
        {f"best/{k}": v for k, v in best.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    ctx.final_metrics["best_trial"] = best_id
    ctx.final_metrics.update({f"best/{path}": value for path, value in (best.config or {}).items()})
    if not sweep.keep_weights:
        for folder in (output / "trials").iterdir():
            if folder.name != best_id:
                shutil.rmtree(folder / "run" / "final", ignore_errors=True)
                shutil.rmtree(folder / "run" / "ray", ignore_errors=True)


def best_finished(results: list[Any], sweep: SweepConfig, trials: Path) -> Any:
    """The result with the best last `metric` among trials that ran to the end: only they have a model
    (a trial ASHA stopped at step 2 may have scored well there, but it has nothing to register)."""
    finished = [
        r
        for r in results
        if r.metrics
        and _plain_number(r.metrics.get(sweep.metric))
        and (trials / str(r.metrics["trial_id"]) / "run" / "final" / "model" / "config.json").exists()
    ]
    if not finished:
        raise RuntimeError(f"no trial ran to the end reporting {sweep.metric!r}; see the trials' errors")
    pick = max if sweep.mode == "max" else min
    return pick(finished, key=lambda r: float(r.metrics[sweep.metric]))


def _trial(params: dict[str, Any], *, kind: str, base: dict[str, Any], metric: str, output: str) -> None:
    """One trial: the single-job training function on `base` with `params` set, each step's metrics
    reported to Tune from this (the trial's) thread while the training runs in another."""
    from ray import tune

    from deepext.config import get_settings
    from deepext.platform import Platform
    from deepext.train.context import MetricsFollower

    trial_id = tune.get_context().get_trial_id()
    config = base
    for path, value in params.items():
        config = with_value(config, path, value)
    run_dir = Path(output) / trial_id / "run"
    config = {**config, "output_dir": str(run_dir)}
    rows: queue.Queue[tuple[str, Any]] = queue.Queue()

    def train() -> None:
        platform = Platform.open(get_settings(), migrate=False)
        try:
            if kind == "grpo":
                from deepext.grpo import train as train_grpo

                with MetricsFollower(run_dir / "metrics.jsonl", lambda step, row: rows.put(("row", (step, row)))):
                    train_grpo(config, platform=platform, run_id="trial")
            else:
                from deepext.train.sft import train_sft

                train_sft(config, platform=platform, run_id="trial", on_metrics=lambda s, m: rows.put(("row", (s, m))))
            rows.put(("done", None))
        except BaseException as exc:  # handed to the trial's thread, which fails the trial with it
            rows.put(("error", exc))
        finally:
            platform.close()

    threading.Thread(target=train, name=f"trial-{trial_id}", daemon=True).start()
    while True:
        what, item = rows.get()
        if what == "error":
            raise item
        if what == "done":
            return
        step, values = item
        numbers = {k: float(v) for k, v in values.items() if _plain_number(v)}
        if metric not in numbers:
            continue  # an evaluation row between steps, say: Tune wants the metric in every result
        tune.report({**numbers, "step": step})


class TrialRecorder(Callback):
    """A Tune callback in the job's entry point: each trial's row in `sweep_trials` and each of its
    results as a job metric row (`trial`, `trial_step`, values) under one growing sequence number."""

    def __init__(self, platform: Any, job_id: int, steps: int, report: Any, *, trials: Path) -> None:
        self.settings, self.job_id, self.steps, self.report = platform.settings, job_id, steps, report
        self.trials = trials
        self._platform: Any = platform
        self.sequence = 0
        self.numbers: dict[str, int] = {}

    @property
    def platform(self) -> Any:
        if self._platform is None:  # unpickled (Tune saves its callbacks with the experiment)
            from deepext.platform import Platform

            self._platform = Platform.open(self.settings, migrate=False)
        return self._platform

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_platform": None}

    def _number(self, trial: Any) -> int:
        return self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        record_trial(self.platform, self.job_id, trial.trial_id, self._number(trial), state="running",
                     config=dict(trial.config))  # fmt: skip

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        values = {k: v for k, v in result.items() if _plain_number(v) and not k.startswith(_TUNE_KEYS)}
        step = int(result.get("step", result.get("training_iteration", 0)))
        self.sequence += 1
        self.report(
            self.platform, self.job_id, self.sequence, {**values, "trial": self._number(trial), "trial_step": step}
        )
        record_trial(self.platform, self.job_id, trial.trial_id, self._number(trial), state="running",
                     config=dict(trial.config), metrics=values, steps=step)  # fmt: skip

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        release_learner_group(self.trials / trial.trial_id / "run")  # a stopped trial's learners stay otherwise
        done = int((trial.last_result or {}).get("step", 0))
        record_trial(self.platform, self.job_id, trial.trial_id, self._number(trial),
                     state="completed" if done >= self.steps else "stopped", config=dict(trial.config))  # fmt: skip

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        release_learner_group(self.trials / trial.trial_id / "run")
        error = str(trial.get_error() or "the trial raised (see the job's logs)")
        record_trial(self.platform, self.job_id, trial.trial_id, self._number(trial), state="failed",
                     config=dict(trial.config), error=error[-2000:])  # fmt: skip


_TUNE_KEYS = ("training_iteration", "time_", "timestamp", "pid", "done", "iterations_since_restore", "config")


def _plain_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))
