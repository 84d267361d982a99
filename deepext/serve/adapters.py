"""LoRA adapters on a shared engine: a LoRA version's deployment runs on its host deployment's
vLLM engine, which loads the adapter on the first request that names it (Ray Serve multiplexing
routes later requests to the replicas that already hold it; the least used adapter is evicted
when the engine's `lora_slots` are full).

Ray Serve LLM fetches adapters from cloud storage only; `AdapterLoader` reads them from a folder
instead: `adapter_root/ADAPTER_ID`, which the deployment controller links to the version's
adapter in the artifact store (`link_adapter`). On a multi-node cluster that folder must be on
storage every node mounts (the artifact store on NFS, as for training). `AdapterLoader` lives in
`adapter_loader.py`: Ray Serve LLM's modules take seconds to import, which no CLI command should pay."""

from __future__ import annotations

from pathlib import Path

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
