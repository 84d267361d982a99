"""Test job: start a Ray actor, write both process ids to `params.pids`, then wait to be cancelled."""

import os
import time

import ray

from deepext.train import context


@ray.remote(num_cpus=0)
class Sleeper:
    def pid(self) -> int:
        return os.getpid()


ctx = context.current()
ray.init()
sleeper = Sleeper.remote()
with open(ctx.config["pids"], "w", encoding="utf-8") as out:
    out.write(f"{os.getpid()} {ray.get(sleeper.pid.remote())}\n")
ctx.report(0, waiting=1.0)
time.sleep(600)
