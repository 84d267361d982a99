"""LoRA adapters on a shared engine: a LoRA version's deployment runs on its host deployment's
vLLM engine, which loads the adapter on the first request that names it (Ray Serve multiplexing
routes later requests to the replicas that already hold it; the least used adapter is evicted
when the engine's `lora_slots` are full).

Ray Serve LLM fetches adapters from cloud storage only; `AdapterLoader` reads them from a folder
instead: `adapter_root/ADAPTER_ID`, which the deployment controller links to the version's
adapter in the artifact store (`link_adapter`). On a multi-node cluster that folder must be on
storage every node mounts (the artifact store on NFS, as for training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader

ROOT_KEY = "deepext_adapter_root"  # where AdapterLoader looks, in LLMConfig.experimental_configs


def adapter_root(home: Path) -> Path:
    return home / "serving" / "adapters"


def link_adapter(root: Path, adapter_id: str, folder: Path) -> Path:
    """Make `root/adapter_id` point at the adapter `folder` (idempotent)."""
    root.mkdir(parents=True, exist_ok=True)
    link = root / adapter_id
    if link.is_symlink() and link.resolve() == folder.resolve():
        return link
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(folder.resolve(), target_is_directory=True)
    return link


class AdapterLoader(LoraModelLoader):
    """Resolves the multiplexed model id `BASE:ADAPTER_ID` to `adapter_root/ADAPTER_ID`."""

    async def load_model_from_config(self, lora_model_id: str, llm_config: Any) -> DiskMultiplexConfig:
        if lora_model_id in self.disk_cache:
            return self.disk_cache[lora_model_id]
        root = Path(llm_config.experimental_configs[ROOT_KEY])
        folder = root / lora_model_id.split(":", 1)[1]
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(f"LoRA adapter {lora_model_id} not found under {root}")
        config = DiskMultiplexConfig(
            model_id=lora_model_id,
            max_total_tokens=None,
            local_path=str(folder),
            lora_assigned_int_id=global_id_manager.next(),
        )
        self.disk_cache[lora_model_id] = config
        return config
