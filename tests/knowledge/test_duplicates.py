"""Near-duplicate rows: the blocked search equals brute force; real embeddings put paraphrases
above the threshold and unrelated rows below it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepext.errors import InvalidInput, NotFound
from deepext.knowledge import duplicates
from deepext.knowledge.duplicates import find_near_duplicates, near_duplicate_pairs, row_text
from deepext.platform import Platform


def _brute_force(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    n = len(vectors)
    pairs = [
        (i, j, float(vectors[i] @ vectors[j]))
        for i in range(n)
        for j in range(i + 1, n)
        if vectors[i] @ vectors[j] >= threshold
    ]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def test_blocked_search_finds_what_brute_force_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 16)).astype(np.float32)
    vectors = np.concatenate([base, base[:10] + 0.05 * rng.normal(size=(10, 16)).astype(np.float32)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = _brute_force(vectors, 0.5)
    assert len(expected) >= 10
    monkeypatch.setattr(duplicates, "_BLOCK_CELLS", 7 * len(vectors))  # blocks of 7 rows
    pairs, total = near_duplicate_pairs(vectors, 0.5)
    assert total == len(expected)
    assert [(i, j) for i, j, _ in pairs] == [(i, j) for i, j, _ in expected]
    assert np.allclose([s for *_, s in pairs], [s for *_, s in expected], atol=1e-5)
    # Only the best are kept, with the count of all, also when pruning happens between blocks.
    best, total = near_duplicate_pairs(vectors, 0.5, max_pairs=2)
    assert [(i, j) for i, j, _ in best] == [(i, j) for i, j, _ in expected[:2]] and total == len(expected)


def test_exact_copies_score_one_and_nothing_pairs_with_itself() -> None:
    vector = np.ones((1, 4), dtype=np.float32) / 2
    pairs, total = near_duplicate_pairs(np.concatenate([vector, vector, -vector]), 1.0)
    assert (pairs, total) == ([(0, 1, pytest.approx(1.0))], 1)
    assert near_duplicate_pairs(np.zeros((0, 4), dtype=np.float32), 0.9) == ([], 0)


def test_row_text_is_the_column_or_json() -> None:
    row = {"prompt": "hi", "meta": {"b": 1, "a": 2}}
    assert row_text(row, "prompt") == "hi"
    assert row_text(row, "meta") == '{"a": 2, "b": 1}'
    assert row_text(row, None) == '{"meta": {"a": 2, "b": 1}, "prompt": "hi"}'


ROWS = [
    {"prompt": "How can I reset my password?", "completion": "Use the settings page."},
    {"prompt": "What is the capital of France?", "completion": "Paris."},
    {"prompt": "What's the way to reset my password?", "completion": "Open settings."},
    {"prompt": "Name a good recipe for tomato soup.", "completion": "Roast tomatoes first."},
    {"prompt": "Which city is the capital of France?", "completion": "Paris."},
    {"prompt": "How many legs does a spider have?", "completion": "Eight."},
]


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is not what is tested
def test_paraphrased_rows_are_reported_and_unrelated_ones_are_not(
    platform: Platform, project: str, tmp_path: Path
) -> None:
    source = tmp_path / "qa.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    platform.datasets.push(project, "qa", source, actor="test")
    report = find_near_duplicates(platform, project=project, dataset="qa@1", field="prompt", threshold=0.75)
    assert report.dataset == f"{project}/qa@1" and report.rows == 6 and report.field == "prompt"
    assert {(p.first, p.second) for p in report.pairs} == {(0, 2), (1, 4)}
    assert report.total_pairs == 2
    assert all(p.score >= 0.75 for p in report.pairs)
    assert report.pairs[0].first_text == ROWS[report.pairs[0].first]["prompt"]
    # Unrelated rows are far below: everything else scores under 0.5.
    everything = find_near_duplicates(platform, project=project, dataset="qa", field="prompt", threshold=0.5)
    assert {(p.first, p.second) for p in everything.pairs} == {(0, 2), (1, 4)}
    whole_rows = find_near_duplicates(platform, project=project, dataset="qa", threshold=0.75)
    assert whole_rows.field is None and (1, 4) in {(p.first, p.second) for p in whole_rows.pairs}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is not what is tested
def test_bad_requests_are_refused_before_any_embedding(platform: Platform, project: str, tmp_path: Path) -> None:
    source = tmp_path / "qa.jsonl"
    source.write_text(json.dumps(ROWS[0]) + "\n")
    platform.datasets.push(project, "qa", source, actor="test")
    with pytest.raises(InvalidInput, match="no column 'question'; its columns: prompt, completion") as raised:
        find_near_duplicates(platform, project=project, dataset="qa", field="question")
    assert raised.value.field == "field"
    with pytest.raises(InvalidInput, match="threshold"):
        find_near_duplicates(platform, project=project, dataset="qa", threshold=0)
    with pytest.raises(NotFound):
        find_near_duplicates(platform, project=project, dataset="missing")
