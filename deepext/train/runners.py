"""How each job kind runs inside its entry point: GRPO, SFT and a user's own script.

Every runner gets the job's context and fills in what to register (`ctx.saved_model`) and its final
metrics; the entry point does the bookkeeping around it.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepext.train.context import JobContext, MetricsFollower, activate
from deepext.train.specs import CUSTOM_ENTRY


def run_grpo(ctx: JobContext, attempt: int) -> None:
    from deepext.grpo import train

    assert ctx.platform is not None and ctx.model_path is not None
    config = {**ctx.config, "model": {**ctx.config["model"], "path": str(ctx.model_path)}}
    config["output_dir"] = str(ctx.output_dir / "run")
    run_id = f"job-{ctx.job_id}"
    resume = attempt > 1 and any((ctx.output_dir / "run" / "ray" / run_id).glob("checkpoint_*"))
    with MetricsFollower(ctx.output_dir / "run" / "metrics.jsonl", lambda step, row: ctx.report(step, **row)):
        result = train(config, platform=ctx.platform, run_id=run_id, resume=resume)
    ctx.saved_model, ctx.saved_adapter = result.model_dir, result.adapter_dir


def run_sft(ctx: JobContext, attempt: int) -> None:
    from deepext.train.sft import train_sft

    assert ctx.platform is not None and ctx.model_path is not None
    config = {**ctx.config, "model": {**ctx.config["model"], "path": str(ctx.model_path)}}
    config["output_dir"] = str(ctx.output_dir / "run")
    result = train_sft(
        config, platform=ctx.platform, run_id=f"job-{ctx.job_id}-{attempt}", on_metrics=lambda s, m: ctx.report(s, **m)
    )
    ctx.saved_model, ctx.saved_adapter = result.model_dir, result.adapter_dir


def run_custom(ctx: JobContext, attempt: int) -> None:
    """Run the submitted script as `__main__` in this process, with the job's context active."""
    assert ctx.platform is not None
    code = ctx.output_dir / "code"
    key, entry = ctx.job_config["script_key"], ctx.job_config[CUSTOM_ENTRY]
    if ctx.job_config.get("script_is_dir"):
        ctx.platform.artifacts.get_dir(key, code)
    else:
        code.mkdir(parents=True, exist_ok=True)
        ctx.platform.artifacts.get_file(key, code / entry)
    script = code / entry
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(script), *map(str, ctx.job_config.get("args", []))]
    sys.path.insert(0, str(code))
    activate(ctx)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:  # a script that calls sys.exit(0) finished; anything else failed
        if exc.code not in (0, None):
            raise RuntimeError(f"{entry} exited with status {exc.code}") from exc
    finally:
        sys.argv, sys.path = argv, path
        activate(None)


def run_eval(ctx: JobContext, attempt: int) -> None:
    """Evaluate the job's target with its suite; the run's aggregates become the job's metrics."""
    from deepext.eval.runner import Workers, evaluate
    from deepext.train.jobs import get_job

    assert ctx.platform is not None and ctx.project is not None
    spec = ctx.job_config
    run = evaluate(
        ctx.platform,
        project=ctx.project,
        suite=spec["suite"],
        target=spec["target"],
        target_kind=spec.get("target_kind", "model_version"),
        workers=Workers(spec.get("workers", 1), spec.get("cpus_per_worker", 1), spec.get("gpus_per_worker", 0)),
        job_id=ctx.job_id,
        actor=f"job:{ctx.job_id}",
        caller=get_job(ctx.platform, ctx.job_id).owner if ctx.job_id is not None else None,
        endpoint_key_env=spec.get("endpoint_key_env"),
    )
    ctx.report(0, eval_run=run.id, score=run.score or 0.0, pass_rate=run.pass_rate or 0.0)


def _quarters(report: Callable[[str, int, int], None]) -> Callable[[str, int, int], None]:
    """A tensor-by-tensor progress callback that passes on only each quarter (a row per tensor would flood
    the job's metrics)."""

    def progress(quantization: str, done: int, total: int) -> None:
        if done == total or done * 4 // total != (done - 1) * 4 // total:
            report(quantization, done, total)

    return progress


def run_sweep(ctx: JobContext, attempt: int) -> None:
    """Trials on Ray Tune (`deepext.train.sweep`), imported here: Ray Tune adds a second to every
    other job's start."""
    from deepext.train.sweep import run_sweep as run_trials

    run_trials(ctx, attempt)


def run_export(ctx: JobContext, attempt: int) -> None:
    """GGUF files of a model version, pushed where the job asked; the files' sizes become its metrics."""
    from deepext.models.export import export_model_version

    assert ctx.platform is not None and ctx.project is not None
    spec, settings = ctx.job_config, ctx.platform.settings
    result = export_model_version(
        ctx.platform,
        ctx.project,
        spec["model"],
        quantizations=spec["quantizations"],
        ollama_url=settings.ollama_url if spec.get("ollama") else None,
        lmstudio_dir=settings.lmstudio_models_dir if spec.get("lmstudio") else None,
        actor=f"job:{ctx.job_id}",
        progress=_quarters(lambda q, done, total: ctx.report(0, quantization=q, tensors_done=done, tensors=total)),
    )
    sizes = {f"{q}_mib": round(size / 2**20, 2) for q, size in result.sizes.items()}
    ctx.report(1, seconds=round(result.seconds, 2), folder=str(result.folder), ollama=bool(result.ollama), **sizes)


RUNNERS: dict[str, Callable[[JobContext, int], None]] = {
    "grpo": run_grpo,
    "sft": run_sft,
    "custom": run_custom,
    "eval": run_eval,
    "sweep": run_sweep,
    "export": run_export,
}


def describe_failure(kind: str, config: dict[str, Any], exc: BaseException) -> str:
    """One line a user can act on: which code raised what, and where in their script if it was theirs."""
    import traceback

    where = ""
    if kind == "custom":
        entry = str(config.get(CUSTOM_ENTRY, ""))
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).name == entry]
        if frames:
            where = f" at {entry} line {frames[-1].lineno}"
        return f"custom script {entry} raised {type(exc).__name__}{where}: {exc}"
    return f"{kind} job failed: {type(exc).__name__}: {exc}"
