"""The process Ray Jobs runs for a deepext job: `python -m deepext.train.entrypoint JOB_ID`.

It loads the job from the metadata store, marks it running, runs its kind, registers the model it
produced as a model version with its lineage, stores the run's report files, and marks the job
succeeded - or failed with a one-line reason (the traceback goes to the Ray job's log). The model
version is registered before the job is marked succeeded, and a failed job registers nothing.

Its log lines carry the job's id, as text or JSON (`log_format`); connected to Ray (GRPO and SFT
always are), its reports and state changes are exported as metrics (`deepext.metrics`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from deepext.airgap import apply_air_gap
from deepext.config import get_settings
from deepext.db.models import Job, JobState
from deepext.errors import Conflict
from deepext.logs import configure_logging
from deepext.platform import Platform
from deepext.train.context import JobContext
from deepext.train.jobs import JobView, fail, get_job, output_folder, transition
from deepext.train.runners import RUNNERS, describe_failure
from deepext.train.specs import pin_dataset

REPORT_FILES = ("metrics.jsonl", "tensorboard", "config.yaml", "run_config.yaml")
log = logging.getLogger("deepext.job")


def model_reference(kind: str, config: dict[str, Any]) -> str | None:
    """The model a training job starts from (an eval job names its target, an export job its version,
    and neither trains a model of its own)."""
    if kind in ("eval", "export"):
        return None
    if kind == "sweep":
        return str(config["base"]["model"]["path"])
    return config.get("model") if kind == "custom" else config["model"]["path"]


def dataset_reference(kind: str, config: dict[str, Any]) -> str | None:
    if kind in ("eval", "export"):
        return None
    if kind == "sweep":
        return config["base"].get("data", {}).get("dataset")
    return config.get("dataset") if kind == "custom" else config.get("data", {}).get("dataset")


def run_job(platform: Platform, job_id: int) -> int:
    job = get_job(platform, job_id)
    try:
        job = transition(
            platform,
            job_id,
            JobState.RUNNING,
            f"entry point started (pid {os.getpid()} on {socket.gethostname()}, attempt {job.attempts})",
            expect=frozenset({JobState.STARTING}),
        )
    except Conflict as exc:  # cancelled (or reconciled) before it got here: nothing to do
        log.warning("deepext job %s: not starting: %s", job_id, exc)
        return 0
    ctx = _context(platform, job)
    try:
        resolved = None
        if (reference := model_reference(job.kind, job.config)) is not None:
            from deepext.models.versions import resolve_model_source

            resolved = resolve_model_source(platform, job.project, reference)
            ctx.model_path = resolved.path
        RUNNERS[job.kind](ctx, job.attempts)
        version = _register(platform, job, ctx, resolved)
        output_key = _store_report(platform, ctx.output_dir)
    except BaseException as exc:
        log.error("deepext job %s failed", job_id, exc_info=exc)
        reason = describe_failure(job.kind, job.config, exc)
        with contextlib.suppress(Conflict):  # cancelled meanwhile: the cancel is the truth
            fail(platform, job_id, reason)
        return 1

    def _finish(row: Job) -> None:
        row.output_key = output_key
        row.metrics = {**row.metrics, **{k: v for k, v in ctx.final_metrics.items() if _plain(v)}}

    reason = f"registered model version {version}" if version else "finished (the job saved no model)"
    try:
        transition(platform, job_id, JobState.SUCCEEDED, reason, update=_finish)
    except Conflict as exc:
        log.warning("deepext job %s: finished but %s", job_id, exc)
    return 0


def _context(platform: Platform, job: JobView) -> JobContext:
    output = output_folder(platform, job.id)
    output.mkdir(parents=True, exist_ok=True)
    params = job.config.get("params", {}) if job.kind == "custom" else job.config
    return JobContext(
        job_id=job.id,
        config=dict(params),
        output_dir=output,
        platform=platform,
        project=job.project,
        dataset=dataset_reference(job.kind, job.config),
        job_config=dict(job.config),
        kind=job.kind,
    )


def _register(platform: Platform, job: JobView, ctx: JobContext, resolved: Any) -> str | None:
    if ctx.saved_model is None:
        return None
    if resolved is None:
        raise ValueError("the script saved a model but the job names no `model` it was trained from (for lineage)")
    from deepext.models.versions import register_model_version

    dataset_id = None
    if (dataset := dataset_reference(job.kind, job.config)) is not None:
        _, dataset_id = pin_dataset(platform, job.project, dataset, "dataset")
    version = register_model_version(
        platform,
        project=job.project,
        name=job.name,
        folder=ctx.saved_model,
        adapter_folder=ctx.saved_adapter,
        kind="lora" if ctx.saved_adapter else "full",
        base_model=resolved.base_model,
        parent=resolved.parent,
        dataset_version_id=dataset_id,
        job_id=job.id,
        config=job.config,
        metrics={k: v for k, v in ctx.final_metrics.items() if _plain(v)},
        actor=job.owner or "deepext",
    )
    return version.ref


def _store_report(platform: Platform, output: Path) -> str | None:
    """Metrics, TensorBoard files and configs of the run (not checkpoints or weights) as one artifact tree."""
    report = output / "report"
    shutil.rmtree(report, ignore_errors=True)
    for source in [output, output / "run"]:
        for name in REPORT_FILES:
            if (source / name).is_file():
                report.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / name, report / name)
            elif (source / name).is_dir():
                shutil.copytree(source / name, report / name, dirs_exist_ok=True)
    return platform.artifacts.put_dir(report) if report.exists() else None


def _plain(value: Any) -> bool:
    return isinstance(value, int | float | str | bool)


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        raise SystemExit("usage: python -m deepext.train.entrypoint JOB_ID")
    settings = get_settings()
    configure_logging(settings.log_format, fields={"job_id": int(sys.argv[1])})
    apply_air_gap(settings)  # before any model loads; the job's Ray workers get it from connect_ray
    platform = Platform.open(settings, migrate=False)
    try:
        code = run_job(platform, int(sys.argv[1]))
    finally:
        platform.close()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
