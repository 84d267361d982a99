"""Weight sync from the learner to every rollout worker, after each optimizer step.

The learner writes its weights once, as safetensors, into shared memory (`/dev/shm`), and each
rollout worker reloads them in place with vLLM's `reload_weights`. Workers on another node cannot
see that folder, so on a multi-node cluster the bytes also travel through Ray's object store and
a worker on another node writes them to its own shared memory first. (On GPU clusters, vLLM's NCCL
weight-transfer engine is the faster path; the interface here stays the same.)

A sync either completes on every worker within the timeout, each confirming the new version, or
fails the run with `WeightSyncError` - it never hangs, and sampling never silently uses old weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
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


def shared_memory_base() -> Path:
    """RAM-backed `/dev/shm` where there is one, else the temp folder."""
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def shared_memory_root(run_id: str) -> Path:
    return shared_memory_base() / f"deepext-{run_id}"


def new_copies_folder() -> Path:
    """A rollout worker's own folder for weights copied from another node. Folders of workers whose
    process is gone (their node was killed before they could remove them) are removed first."""
    base = shared_memory_base()
    for stale in base.glob("deepext-weights-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"deepext-weights-{os.getpid()}-", dir=base))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process, alive
    return True


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
    node_id = current_node_id()
    data = None
    if ray.is_initialized() and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        data = ray.put((folder / WEIGHTS_FILE).read_bytes())
    return WeightsRef(str(folder), version, node_id, data)


def materialize_weights(ref: WeightsRef, copies: Path) -> Path:
    """A folder on this node holding `ref`'s weights: the learner's own folder when the learner
    runs on this node, else a copy from the object store written under `copies` (older copies
    there are dropped)."""
    folder = Path(ref.path)
    here = current_node_id()
    if ref.node_id in (here, "local") or ref.data is None:
        if not (folder / WEIGHTS_FILE).exists():
            raise WeightSyncError(
                f"weights v{ref.version} are not at {folder} on this node and were not sent through the object store"
            )
        return folder
    import ray

    local = copies / f"v{ref.version}"
    local.mkdir(parents=True, exist_ok=True)
    (local / WEIGHTS_FILE).write_bytes(ray.get(ref.data))
    for old in copies.glob("v*"):
        if old != local:
            shutil.rmtree(old, ignore_errors=True)
    return local


def current_node_id() -> str:
    """The Ray node this process runs on ("local" outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def wait_until_ready(workers: Sequence[Any], timeout_s: float) -> list[dict[str, Any]]:
    """Each rollout worker's state once it answers; a worker that is gone, or still being placed
    after `timeout_s` (a restart waiting for a node that offers its resources), fails the run."""
    import ray
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return list(ray.get([w.ready.remote() for w in workers], timeout=max(0.0, deadline - time.monotonic())))
        except ActorUnavailableError:  # restarting right now: ask again
            if time.monotonic() >= deadline:
                break
            time.sleep(1)
        except GetTimeoutError:
            break
        except RayActorError as exc:
            raise WeightSyncError(f"a rollout worker is gone and could not be restarted: {exc}") from exc
    raise WeightSyncError(
        f"rollout workers were not ready within {timeout_s:g} s (is a node with their resources alive?)"
    )


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


def rollout_state_dict(model: Any, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The policy's weights under the plain Hugging Face names vLLM loads, in `dtype` (the engine's).

    A PEFT (LoRA) model sends base + adapter delta for each adapted layer, computed beside the
    model: merging into the base in place and unmerging after would round a bfloat16 base a little
    further from the original at every sync.
    """
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if isinstance(model, PeftModel):
        base = model.get_base_model()
        deltas = {}
        with torch.no_grad():
            for name, module in base.named_modules():
                if isinstance(module, LoraLayer) and module.active_adapters and not module.disable_adapters:
                    layer: Any = module  # a LoRA Linear, Embedding or Conv: each defines get_delta_weight
                    deltas[f"{name}.weight"] = layer.get_delta_weight(layer.active_adapters[0])
        state = {}
        for name, tensor in base.state_dict().items():
            if "lora_" in name:
                continue
            name = name.replace(".base_layer.", ".")
            delta = deltas.get(name)
            state[name] = tensor if delta is None else tensor.float() + delta.float()
    else:
        state = dict(model.state_dict())
        base = model
    if dtype is not None:
        state = {name: tensor.to(dtype) for name, tensor in state.items()}
    if "lm_head.weight" in state and getattr(base.config, "tie_word_embeddings", False):
        # vLLM's in-place reload wants the tied head too; safetensors wants it as its own tensor.
        state["lm_head.weight"] = state["lm_head.weight"].clone()
    return state
