"""One router per resource; `ROUTERS` is what the app mounts under /api/v1."""

from deepext.serve.routes import (
    audit_log,
    auth,
    dashboard,
    datasets,
    deployments,
    evaluations,
    health,
    jobs,
    knowledge,
    models,
    openai,
    profiles,
    projects,
    users,
)
from deepext.serve.routes import providers as providers_routes
from deepext.serve.routes import usage as usage_routes

ROUTERS = [
    health.router,
    auth.router,
    users.router,
    projects.router,
    dashboard.router,
    datasets.router,
    models.router,
    jobs.router,
    profiles.router,
    evaluations.router,
    deployments.router,
    audit_log.router,
    providers_routes.router,
    usage_routes.router,
    knowledge.router,
    knowledge.duplicates_router,
]
OPENAI_ROUTER = openai.router  # mounted at /v1, where OpenAI clients look
