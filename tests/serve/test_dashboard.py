"""The project dashboard: days filled in (pure), counts by state and stage from the store, the Ray
cluster's use (the real local Ray), and recent audit events for admins only."""

from __future__ import annotations

import datetime as dt

import pytest

from deepext.dashboard import build_dashboard, cluster_use, per_day
from deepext.platform import Platform
from deepext.train.jobs import create_job, transition
from tests.serve.conftest import Api


def test_days_without_jobs_show_as_zero_and_old_jobs_are_left_out() -> None:
    today = dt.date(2026, 12, 4)
    at = dt.datetime(2026, 12, 4, 23, 59, tzinfo=dt.UTC)
    created = [
        (at, "succeeded"),
        (at, "failed"),
        (at - dt.timedelta(days=2), "succeeded"),
        (at.replace(tzinfo=None) - dt.timedelta(days=6), "queued"),  # SQLite hands back naive UTC
        (at - dt.timedelta(days=7), "queued"),  # 8 days ago counting today: not shown
    ]
    days = per_day(created, today)
    assert [d["day"] for d in days] == [f"2026-11-{d}" for d in (28, 29, 30)] + [f"2026-12-0{d}" for d in (1, 2, 3, 4)]
    assert days[0] == {"day": "2026-11-28", "queued": 1}
    assert days[4] == {"day": "2026-12-02", "succeeded": 1}
    assert days[6] == {"day": "2026-12-04", "succeeded": 1, "failed": 1}
    assert days[1] == {"day": "2026-11-29"}


def test_the_dashboard_counts_the_project_and_shows_audit_only_to_admins(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # an API process without Ray (a real one: below)
    platform = api.platform
    for _ in range(2):
        create_job(platform, project="p", kind="custom", config={}, resources={}, actor="owner")
    done = create_job(platform, project="p", kind="custom", config={}, resources={}, actor="owner")
    transition(platform, done.id, "cancelled", "test")
    create_job(platform, project="q", kind="custom", config={}, resources={}, actor="outsider")  # another project

    as_owner = api.call("GET", "/projects/p/dashboard", "owner")
    assert as_owner.status_code == 200, as_owner.text
    board = as_owner.json()
    assert board["jobs_by_state"] == {"queued": 2, "cancelled": 1}
    assert (board["datasets"], board["evaluations"], board["model_versions_by_stage"]) == (0, 0, {})
    today = board["jobs_per_day"][-1]
    assert len(board["jobs_per_day"]) == 7 and today == {
        "day": dt.datetime.now(dt.UTC).date().isoformat(),
        "queued": 2,
        "cancelled": 1,
    }
    assert board["recent_audit"] is None  # owners do not read the audit log
    assert board["cluster"]["error"] == "this process is not connected to Ray"

    as_admin = api.call("GET", "/projects/p/dashboard", "admin").json()
    actions = [row["action"] for row in as_admin["recent_audit"]]
    assert actions.count("job.submit") == 3 and all(
        row["project_id"] == api.project_id("p") for row in as_admin["recent_audit"]
    )
    assert api.call("GET", "/projects/q/dashboard", "viewer").status_code == 404


@pytest.mark.slow
def test_cluster_use_reads_the_connected_ray(ray_session: str) -> None:
    import ray

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()  # type: ignore[attr-defined]
    ray.get(holder.ready.remote(), timeout=120)
    try:
        use = cluster_use()
        assert use.error is None and use.nodes == 1
        assert use.total["CPU"] == 2 and use.used["CPU"] >= 1
    finally:
        ray.kill(holder)


def test_the_dashboard_of_a_missing_project_is_not_found(platform: Platform) -> None:
    from deepext.errors import NotFound

    with pytest.raises(NotFound):
        build_dashboard(platform, "nope", admin=True)
