"""Test job: append this job's id to the file `params.log`, report one metric, sleep `params.seconds`."""

import os
import time

from deepext.train import context

ctx = context.current()
with open(ctx.config["log"], "a", encoding="utf-8") as log:
    log.write(f"{ctx.job_id} {os.getpid()}\n")
ctx.report(0, started=1.0)
time.sleep(float(ctx.config.get("seconds", 0)))
