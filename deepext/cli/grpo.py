"""`deepext grpo run CONFIG.yaml`: a GRPO run with a live progress bar over its steps."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

from deepext.cli.common import err, out, reports_errors

grpo_app = typer.Typer(help="GRPO reinforcement learning runs.", no_args_is_help=True)


@grpo_app.command("run")
@reports_errors
def grpo_run(
    config: Path = typer.Argument(..., help="A GRPO config file (YAML)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output_dir from its last checkpoint."),
    run_id: str = typer.Option(None, "--run-id", help="Name of the run (needed with --resume)."),
) -> None:
    """Train with GRPO: vLLM rollout workers and Ray Train learners on the configured Ray."""
    from deepext.grpo.config import load_config
    from deepext.grpo.loop import train
    from deepext.grpo.metrics import read_metrics

    cfg = load_config(config)  # fails here, naming the field, before anything starts
    state: dict[str, object] = {}

    def started(output: Path, steps: int) -> None:
        state.update(output=output, steps=steps)

    result_box: dict[str, object] = {}

    def run() -> None:
        try:
            result_box["result"] = train(cfg, run_id=run_id, resume=resume, on_start=started)
        except BaseException as exc:  # handed to the main thread below
            result_box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("starting rollout workers and learners", total=None)
        while worker.is_alive():
            worker.join(2.0)
            if "output" in state:
                rows = [r for r in read_metrics(Path(str(state["output"]))) if "reward_mean" in r]
                progress.update(task, total=int(str(state["steps"])), completed=rows[-1]["step"] if rows else 0)
                if rows:
                    last = rows[-1]
                    progress.update(task, description=f"reward {last['reward_mean']:.3f}  kl {last.get('kl', 0):.4f}")
        time.sleep(0)
    if "error" in result_box:
        raise result_box["error"]  # type: ignore[misc]
    result = result_box["result"]
    out.print(f"run {result.run_id} finished in {result.seconds:.0f} s: model in {result.model_dir}")  # type: ignore[attr-defined]
    out.print(f"metrics: {result.output_dir / 'metrics.jsonl'}")  # type: ignore[attr-defined]
