"""What a training script sees of its job: config, data, output folder, and where to report.

Built-in kinds and users' own scripts use the same object. A custom script needs a few lines:

    from deepext.train import context

    ctx = context.current()              # the job this process runs (or a local stand-in)
    rows = ctx.dataset_rows()            # the job's dataset version, as dicts
    for step in range(ctx.config.get("steps", 100)):
        ...
        ctx.report(step, loss=loss)      # stored with the job, shown live by the CLI and UI
    ctx.save_model(folder)               # registered as a model version when the job succeeds

Outside a job (`python train.py` on a laptop) `current()` returns a local context: the config comes
from `DEEPEXT_JOB_CONFIG` (a JSON/YAML file) if set, reports are printed, and nothing is stored.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepext.platform import Platform


@dataclass
class JobContext:
    """One job's inputs and outputs. `platform` is None for a local run outside the platform."""

    job_id: int | None
    config: dict[str, Any]
    output_dir: Path
    platform: Platform | None = None
    project: str | None = None
    dataset: str | None = None  # PROJECT/NAME@VERSION
    model_path: Path | None = None  # the resolved base model or model version folder, if the job names one
    job_config: dict[str, Any] = field(default_factory=dict)  # the whole job config (for custom: script, params...)
    kind: str | None = None  # sft | grpo | eval | custom (a label of the job's exported metrics)
    saved_model: Path | None = None
    saved_adapter: Path | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)

    def report(self, step: int, **metrics: Any) -> None:
        """Record one step's metrics with the job (printed when run locally). Inside Ray the step,
        reward mean and tokens/s are also exported to Prometheus (`deepext.metrics`)."""
        self.final_metrics.update(metrics)
        if self.platform is None or self.job_id is None:
            print(f"step {step}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()), flush=True)
            return
        from deepext.metrics import record_job_report
        from deepext.train.jobs import report_metrics

        report_metrics(self.platform, self.job_id, step, metrics)
        record_job_report(self.job_id, self.kind or "unknown", self.project or "", step, metrics)

    def save_model(self, path: str | Path, *, adapter: str | Path | None = None) -> None:
        """Name the Hugging Face folder (and LoRA adapter folder) to register when the job succeeds."""
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} is not a Hugging Face model folder (no config.json); save_pretrained it first")
        self.saved_model = folder.resolve()
        self.saved_adapter = Path(adapter).resolve() if adapter is not None else None

    def dataset_rows(self) -> list[dict[str, Any]]:
        """The rows of the job's dataset version (`dataset` in its config)."""
        if self.dataset is None:
            raise ValueError("this job names no dataset (set `dataset: PROJECT/NAME@VERSION` in its config)")
        from deepext.grpo.data import read_rows

        rows, _ = read_rows(self.dataset, None, self.platform)
        return rows


_current: JobContext | None = None


def current() -> JobContext:
    """The context of the job this process runs; a local one when run outside the platform."""
    global _current
    if _current is None:
        config: dict[str, Any] = {}
        if path := os.environ.get("DEEPEXT_JOB_CONFIG"):
            config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        output = Path(os.environ.get("DEEPEXT_OUTPUT_DIR", "outputs"))
        output.mkdir(parents=True, exist_ok=True)
        _current = JobContext(job_id=None, config=config, output_dir=output, dataset=config.get("dataset"))
    return _current


def activate(ctx: JobContext | None) -> None:
    """Set (or clear) the context `current()` returns: the entry point does this before a script runs."""
    global _current
    _current = ctx


class MetricsFollower:
    """Reads a run's `metrics.jsonl` as it grows and hands each new row to `on_row(step, values)`.

    The GRPO and SFT engines write their metrics on Ray Train workers; the entry point follows the
    file to store them with the job while it runs (the file lives on the cluster's shared storage).
    """

    def __init__(self, path: Path, on_row: Callable[[int, dict[str, Any]], None], interval: float = 0.5) -> None:
        self.path = path
        self.on_row = on_row
        self.interval = interval
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-follower", daemon=True)

    def __enter__(self) -> MetricsFollower:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # the rows written after the last poll

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            while (line := handle.readline()).endswith(b"\n"):  # a half-written last line waits
                self._offset += len(line)
                if line.strip():
                    record = json.loads(line)
                    self.on_row(int(record.pop("step", 0)), record)
