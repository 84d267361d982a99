"""One router per resource; `ROUTERS` is what the app mounts under /api/v1."""

from deepext.serve.routes import (
    audit_log,
    auth,
    datasets,
    deployments,
    evaluations,
    health,
    jobs,
    models,
    openai,
    projects,
    users,
)

ROUTERS = [
    health.router,
    auth.router,
    users.router,
    projects.router,
    datasets.router,
    models.router,
    jobs.router,
    evaluations.router,
    deployments.router,
    audit_log.router,
]
OPENAI_ROUTER = openai.router  # mounted at /v1, where OpenAI clients look
