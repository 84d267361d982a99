"""Sweep wall time: six GRPO trials on the tiny model as one `sweep` job (Ray Tune, two at a time,
ASHA stopping the poor ones) against the same six configs trained one after another to the end, as
six single jobs would, in one process run on a local Ray.

Both sides run the same training function (`deepext.grpo.train`) with the same values: the sweep
first, then each of its trials' values again, sequentially. Engine and learner start-up are paid per
trial on both sides.

    .venv/bin/python benchmarks/sweep_vs_sequential.py [--steps 6] [--trials 6] [--concurrency 2]

Last line: `sweep_vs_sequential s sweep=X sequential=Y ratio=Z stopped_early=N`
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    import os

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray

    from deepext.config import Settings
    from deepext.db.models import JobState
    from deepext.grpo import train
    from deepext.models.registry import register_base_model
    from deepext.models.tiny import create_tiny_model
    from deepext.platform import Platform
    from deepext.projects import create_project
    from deepext.train.entrypoint import run_job
    from deepext.train.jobs import get_job, transition
    from deepext.train.service import submit_job
    from deepext.train.sweep import with_value
    from deepext.train.trials import list_trials

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = Settings(home=root / "home", database_url=f"sqlite:///{root}/metadata.db")
        os.environ["DEEPEXT_HOME"], os.environ["DEEPEXT_DATABASE_URL"] = str(settings.home), settings.database_url
        ray.init(num_cpus=2, runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}}, log_to_driver=False)
        platform = Platform.open(settings)
        with platform.db.session() as session:
            create_project(session, name="bench", actor="bench")
        model = create_tiny_model(root / "tiny")
        register_base_model(platform, "tiny", model, actor="bench")
        prompts = root / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"Count to {i}"}) + "\n" for i in range(16)))
        platform.datasets.push("bench", "counting", prompts, actor="bench")
        base: dict[str, Any] = {
            "name": "bench",
            "model": {"path": "tiny"},
            "data": {"dataset": "counting@1"},
            "rewards": [{"name": "length_penalty", "params": {"max_chars": 12}}],
            "sampling": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 16},
            "schedule": {"steps": args.steps},
            "resources": {"rollout_cpus": 0.45, "learner_cpus": 0.45, "threads_per_worker": 1, "max_model_len": 128},
        }
        sweep = {
            "kind": "grpo",
            "base": base,
            "search_space": {
                "optim.learning_rate": {"loguniform": [1.0e-4, 1.0e-1]},
                "algorithm.kl_coef": {"choice": [0.0, 0.05]},
            },
            "trials": args.trials,
            "concurrency": args.concurrency,
            "seed": 7,
        }
        job = submit_job(platform, project="bench", kind="sweep", config=sweep, actor="bench")
        started = time.perf_counter()
        transition(platform, job.id, JobState.STARTING, "benchmark")  # as the scheduler claims a job
        code = run_job(platform, job.id)  # the job's entry point, in this process
        sweep_s = time.perf_counter() - started
        done = get_job(platform, job.id)
        if code != 0:
            raise SystemExit(f"the sweep failed: {done.error}")
        trials = list_trials(platform, job.id)
        stopped = [t for t in trials if t.state == "stopped"]
        for trial in trials:
            print(f"trial {trial.number}: {trial.state} after {trial.steps} of {args.steps} steps, "
                  f"reward_mean {trial.metrics.get('reward_mean', float('nan')):.3f}, {trial.config}")  # fmt: skip
        print(f"sweep: {sweep_s:.1f} s, best trial {done.metrics.get('best_trial')}")

        single = {**base, "model": {"path": str(model)}, "data": {"path": str(prompts)}}
        started = time.perf_counter()
        for trial in trials:
            config = single
            for path, value in trial.config.items():
                config = with_value(config, path, value)
            config["output_dir"] = str(root / "sequential" / trial.trial_id)
            one = time.perf_counter()
            train(config, platform=platform, run_id=f"seq-{trial.number}")
            print(f"sequential trial {trial.number}: {time.perf_counter() - one:.1f} s")
        sequential_s = time.perf_counter() - started
        platform.close()
        ray.shutdown()
    print(
        f"sweep_vs_sequential s sweep={sweep_s:.1f} sequential={sequential_s:.1f} "
        f"ratio={sequential_s / sweep_s:.2f} stopped_early={len(stopped)}"
    )


if __name__ == "__main__":
    main()
