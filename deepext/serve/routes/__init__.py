"""One router per resource; `ROUTERS` is what the app mounts under /api/v1."""

from deepext.serve.routes import audit_log, auth, datasets, evaluations, health, jobs, models, projects, users

ROUTERS = [
    health.router,
    auth.router,
    users.router,
    projects.router,
    datasets.router,
    models.router,
    jobs.router,
    evaluations.router,
    audit_log.router,
]
