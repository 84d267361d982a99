"""Weight sync from the learner to every rollout worker, after each optimizer step.

The learner writes its weights once, as safetensors, into shared memory (`/dev/shm`), and each
rollout worker reloads them in place with vLLM's `reload_weights`. Workers on another node cannot
see that folder, so on a multi-node cluster the bytes also travel through Ray's object store and
the worker writes them to its own shared memory first. (On GPU clusters, vLLM's NCCL
weight-transfer engine is the faster path; the interface here stays the same.)

A sync either completes on every worker within the timeout, each confirming the new version, or
fails the run with `WeightSyncError` - it never hangs, and sampling never silently uses old weights.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepext.errors import DeepextError

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "model.safetensors"
_KEEP_VERSIONS = 2


class WeightSyncError(DeepextError):
    pass


@dataclass(frozen=True)
class WeightsRef:
    """Where version `version` of the policy's weights can be read."""

    path: str
    version: int
    node_id: str
    data: Any = None  # ObjectRef of the safetensors bytes, for workers on other nodes


def shared_memory_root(run_id: str) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"deepext-{run_id}"


def publish_weights(state_dict: dict[str, torch.Tensor], version: int, root: Path) -> WeightsRef:
    """Write `state_dict` as version `version` under `root`, dropping versions no worker needs."""
    import ray
    from safetensors.torch import save_file

    folder = root / f"v{version}"
    staging = root / f".v{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state_dict.items()}
    save_file(tensors, str(staging / WEIGHTS_FILE))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    for old in root.glob("v*"):
        if old.name[1:].isdigit() and int(old.name[1:]) <= version - _KEEP_VERSIONS:
            shutil.rmtree(old, ignore_errors=True)
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    data = None
    if ray.is_initialized() and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        data = ray.put((folder / WEIGHTS_FILE).read_bytes())
    return WeightsRef(str(folder), version, node_id, data)


def materialize_weights(ref: WeightsRef) -> Path:
    """A local folder holding `ref`'s weights (the learner's own, or a copy from the object store)."""
    folder = Path(ref.path)
    if (folder / WEIGHTS_FILE).exists():
        return folder
    if ref.data is None:
        raise WeightSyncError(f"weights v{ref.version} are not at {folder} and were not sent through the object store")
    import ray

    local = shared_memory_root("remote") / f"v{ref.version}"
    local.mkdir(parents=True, exist_ok=True)
    (local / WEIGHTS_FILE).write_bytes(ray.get(ref.data))
    return local


def sync_weights(workers: Sequence[Any], ref: WeightsRef, timeout_s: float) -> None:
    """Push `ref` to every rollout worker actor and wait until each confirms that version."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    pending = [worker.update_weights.remote(ref) for worker in workers]
    try:
        versions = ray.get(pending, timeout=timeout_s)
    except GetTimeoutError as exc:
        for task in pending:
            ray.cancel(task, force=True)
        raise WeightSyncError(f"weight sync v{ref.version} did not finish within {timeout_s:g} s") from exc
    except (RayActorError, RayTaskError) as exc:
        raise WeightSyncError(f"weight sync v{ref.version} failed on a rollout worker: {exc}") from exc
    stale = [i for i, version in enumerate(versions) if version != ref.version]
    if stale:
        raise WeightSyncError(f"rollout workers {stale} did not confirm weights v{ref.version}: {versions}")


def rollout_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The policy's weights under the plain Hugging Face names vLLM loads.

    A PEFT (LoRA) model is merged for the copy and unmerged again, so the learner keeps training
    the adapter.
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.merge_adapter()
        try:
            base = model.get_base_model()
            state = {
                name.replace(".base_layer.", "."): tensor.detach().clone()
                for name, tensor in base.state_dict().items()
                if "lora_" not in name
            }
        finally:
            model.unmerge_adapter()
    else:
        state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
        base = model
    if "lm_head.weight" in state and getattr(base.config, "tie_word_embeddings", False):
        # vLLM's in-place reload wants the tied head too; safetensors wants it as its own tensor.
        state["lm_head.weight"] = state["lm_head.weight"].clone()
    return state
