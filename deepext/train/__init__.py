"""Training orchestrator: SFT, GRPO and custom training code as tracked, cancellable Ray jobs.

    from deepext.train import submit_job, wait_for_job
    job = submit_job(platform, project="demo", kind="grpo", config={...}, actor="alice")
    wait_for_job(platform, job.id)

The store records jobs (`jobs`), the scheduler admits them to Ray Jobs (`scheduler`), each runs
`python -m deepext.train.entrypoint JOB_ID` (`entrypoint`, `runners`), which registers the model
version it produced (`deepext.models.versions`).
"""

from deepext.train.jobs import JobView, get_job, job_events, job_metrics, list_jobs, retry
from deepext.train.service import cancel_job, job_logs, submit_job, wait_for_job

__all__ = [
    "JobView",
    "cancel_job",
    "get_job",
    "job_events",
    "job_logs",
    "job_metrics",
    "list_jobs",
    "retry",
    "submit_job",
    "wait_for_job",
]
