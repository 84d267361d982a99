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
