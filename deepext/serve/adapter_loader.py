"""`AdapterLoader`: Ray Serve LLM's LoRA loader, reading adapters from `adapter_root` (see `adapters.py`)
instead of cloud storage. Imported only where an engine is deployed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader

from deepext.serve.adapters import ROOT_KEY


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
