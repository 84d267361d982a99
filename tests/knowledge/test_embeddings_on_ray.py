"""`embed_texts` on Ray: a large input is split into Ray tasks (one per part, run by Ray's worker
processes) whose vectors, put back together, are the in-process ones in the input's order."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from deepext.knowledge import embeddings
from deepext.knowledge.embeddings import embed_texts, get_embedder

TASK_NAME = embeddings._embed_part.__name__  # Ray names a task after its function


def _finished_parts(dashboard: str, job_id: str) -> list[Any]:
    """This job's finished embedding tasks, from Ray's state API (of this Ray: the machine may run others)."""
    from ray.util.state import list_tasks

    filters: list[tuple[str, str, str | bool | int | float]] = [
        ("name", "=", TASK_NAME),
        ("job_id", "=", job_id),
        ("state", "=", "FINISHED"),
    ]
    return list(list_tasks(address=dashboard, filters=filters, detail=True, raise_on_missing_output=False))


def _wait_for_parts(dashboard: str, job_id: str, count: int, timeout_s: float = 15.0) -> list[Any]:
    """The finished embedding tasks of this job once there are `count` (task events reach Ray's
    state API a moment after the tasks end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        parts = _finished_parts(dashboard, job_id)
        if len(parts) >= count or time.monotonic() > deadline:
            return parts
        time.sleep(0.25)


@pytest.mark.slow
def test_a_large_input_is_embedded_by_ray_tasks_in_order(ray_session: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(embeddings, "RAY_MIN_TEXTS", 8)
    monkeypatch.setattr(embeddings, "RAY_PART_TEXTS", 3)
    monkeypatch.setattr(embeddings, "_REMOTE", {})  # the task is made for this Ray session
    # Distinct texts of varied length: parts pad differently from one batch, and a swapped part shows.
    texts = [
        f"document {i}: "
        + " ".join(["the river", "a train to Lyon", "password reset"][i % 3] for _ in range(i % 5 + 1))
        for i in range(20)
    ]
    job_id = ray.get_runtime_context().get_job_id()
    before = len(_finished_parts(ray_session, job_id))

    on_ray = embed_texts(texts)
    below_threshold = embed_texts(texts[:7])  # stays in this process: starts no task
    here = get_embedder().embed(texts)  # (loading the model here also gives Ray time to report the tasks)

    assert on_ray.shape == (20, 384) and on_ray.dtype == np.float32
    assert np.allclose(on_ray, here, atol=1e-5)  # the same vectors, in the input's order
    assert np.allclose(below_threshold, here[:7], atol=1e-5)
    parts = _wait_for_parts(ray_session, job_id, before + 7)
    assert len(parts) - before == 7  # 20 texts in parts of 3, and none for the 7
