"""The learners' placement group of a run, recorded so it can be released when Ray Train cannot.

Ray Train removes its workers' placement group when a run ends, but not when the process that runs
the trainer is killed: a sweep trial that Tune stops early is such a process, and a placement group
made by an actor lives as long as the job that made it. Left there, the groups of stopped trials
hold their CPUs and GPUs until the sweep ends, and later trials wait for resources forever. So rank 0
of every run writes its group's id into the run's folder, and the sweep's driver releases the group
of each trial that ends (`deepext/train/sweep.py`).
"""

from __future__ import annotations

from pathlib import Path

GROUP_FILE = "learners.placement_group"


def record_learner_group(output: Path) -> None:
    """In a Ray Train worker: write the id of the placement group it runs in (if any) to `output`."""
    import ray

    group = ray.util.get_current_placement_group()
    if group is not None:
        (output / GROUP_FILE).write_text(group.id.hex())


def release_learner_group(output: Path) -> bool:
    """Remove the placement group recorded in `output` if it is still there; whether it was."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table

    path = output / GROUP_FILE
    if not path.exists():
        return False
    group_id = path.read_text().strip()
    if placement_group_table().get(group_id, {}).get("state") in (None, "REMOVED"):
        return False
    ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id))))
    return True


def release_job_leftovers() -> list[str]:
    """In a sweep's driver once Tune is done: end the Ray Train controllers of this job still alive
    and remove its placement groups still there; what was ended, for the log.

    A trial that Tune stops while its controller is restarting its workers can leave a controller and
    a fresh group behind, holding CPUs until the job's driver has exited. A job is marked done
    before its driver exits, so the next job could be admitted onto CPUs that are not free yet."""
    import ray
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_actors, list_placement_groups

    job = ray.get_runtime_context().get_job_id()
    ended = []
    alive: list[tuple[str, str, str | bool | int | float]] = [
        ("job_id", "=", job),
        ("class_name", "=", "TrainController"),
        ("state", "=", "ALIVE"),
    ]
    for actor in list_actors(filters=alive):
        # ray.kill wants a handle, which only the actor's creator has; this is what it calls.
        ray._private.worker.global_worker.core_worker.kill_actor(  # type: ignore[attr-defined]
            ray.ActorID.from_hex(actor.actor_id), True
        )
        ended.append(f"controller {actor.actor_id}")
    for group in list_placement_groups(filters=[("creator_job_id", "=", job)], limit=10_000):
        if group.state != "REMOVED":
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group.placement_group_id)))
            ended.append(f"placement group {group.placement_group_id}")
    return ended
