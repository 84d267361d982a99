"""Pushing, appending and splitting dataset versions, on SQLite and on PostgreSQL.

Every bad file must fail with the file, row and problem named, and leave nothing behind: no
version, no dataset row, no blob.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from deepext.datasets import readers
from deepext.db.models import Dataset, DatasetVersion
from deepext.errors import DatasetFormatError, InvalidInput, NotFound
from deepext.platform import Platform


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def qa_rows(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "answer": str(i + 1), "id": i} for i in range(start, start + n)]


def nothing_written(platform: Platform) -> bool:
    with platform.db.session() as session:
        versions = session.scalar(select(func.count(DatasetVersion.id)))
        datasets = session.scalar(select(func.count(Dataset.id)))
    return versions == 0 and datasets == 0 and list(platform.artifacts.iter_keys()) == []


def test_push_jsonl_records_an_immutable_version(platform: Platform, project: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "qa.jsonl", qa_rows(50))
    outcome = platform.datasets.push(project, "qa", source, labels=["golden"], actor="test")
    version = outcome.version
    assert outcome.created
    assert (version.ref, version.row_count, version.format) == ("demo/qa@1", 50, "prompt_reference")
    assert version.source_format == "jsonl"
    assert version.schema == {"prompt": "string", "answer": "string", "id": "int64"}
    assert version.stats["id"]["max"] == 49
    assert version.labels == ["golden"]
    assert len(version.content_hash) == 64
    assert platform.datasets.read_table(version).to_pylist() == qa_rows(50)


def test_pushing_the_same_content_again_returns_the_existing_version(
    platform: Platform, project: str, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "qa.jsonl", qa_rows(10))
    first = platform.datasets.push(project, "qa", source, actor="test")
    blobs = sorted(platform.artifacts.iter_keys())
    again = platform.datasets.push(project, "qa", source, actor="test")
    renamed = write_jsonl(tmp_path / "copy-of-qa.jsonl", qa_rows(10))
    third = platform.datasets.push(project, "qa", renamed, actor="test")
    assert not again.created and not third.created
    assert again.version.id == first.version.id == third.version.id
    assert sorted(platform.artifacts.iter_keys()) == blobs
    assert [v.version for v in platform.datasets.versions(project, "qa")] == [1]


def test_new_content_makes_a_new_version_and_refs_resolve(platform: Platform, project: str, tmp_path: Path) -> None:
    platform.datasets.push(project, "qa", write_jsonl(tmp_path / "a.jsonl", qa_rows(5)), actor="t")
    platform.datasets.push(project, "qa", write_jsonl(tmp_path / "b.jsonl", qa_rows(6)), labels=["train"], actor="t")
    platform.datasets.push(project, "qa", write_jsonl(tmp_path / "c.jsonl", qa_rows(7)), actor="t")
    assert platform.datasets.get(project, "qa").version == 3
    assert platform.datasets.get(project, "qa@1").row_count == 5
    assert platform.datasets.get(project, "qa@train").version == 2
    platform.datasets.label(project, "qa@3", add=["train"], actor="t")
    assert platform.datasets.get(project, "qa@train").version == 3
    platform.datasets.label(project, "qa@3", remove=["train"], actor="t")
    assert platform.datasets.get(project, "qa@train").version == 2
    with pytest.raises(NotFound, match="qa@9"):
        platform.datasets.get(project, "qa@9")
    assert platform.datasets.list_datasets(project) == [{"name": "qa", "versions": 3, "latest": 3}]


def test_csv_parquet_and_datasets_folders(platform: Platform, project: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "pc.csv"
    csv_file.write_text('prompt,completion\n"Say hi","hi, there"\n"multi\nline",ok\n', encoding="utf-8")
    version = platform.datasets.push(project, "pc", csv_file, actor="t").version
    assert (version.format, version.row_count, version.source_format) == ("prompt_completion", 2, "csv")
    assert platform.datasets.preview(version, 5)[1] == {"prompt": "multi\nline", "completion": "ok"}

    parquet_file = tmp_path / "pref.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["good"], "rejected": ["bad"]}), parquet_file)
    version = platform.datasets.push(project, "pref", parquet_file, actor="t").version
    assert (version.format, version.source_format) == ("preference", "parquet")

    import datasets

    chats = [[{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}] for i in range(3)]
    datasets.Dataset.from_dict({"messages": chats}).save_to_disk(str(tmp_path / "hf"))
    version = platform.datasets.push(project, "chat", tmp_path / "hf", actor="t").version
    assert (version.format, version.row_count, version.source_format) == ("chat", 3, "hf")
    assert version.stats["messages"]["mean"] == 2.0

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["x"]})}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DatasetFormatError, match=r"DatasetDict with splits \['train'\]"):
        platform.datasets.push(project, "dd", tmp_path / "dd", actor="t")


GOOD = '{"prompt": "p", "completion": "c"}\n'

BAD_FILES = [
    pytest.param("bad.jsonl", GOOD * 2 + '{"prompt": "p", "completion": \n', 3, "malformed JSON", id="malformed"),
    pytest.param("bad.jsonl", GOOD + "[1, 2]\n", 2, "expected a JSON object", id="not-an-object"),
    pytest.param("bad.jsonl", '{"input": "a", "output": "b"}\n', None, "no known dataset format", id="columns"),
    pytest.param("bad.jsonl", GOOD * 3 + '{"prompt": "p"}\n', 4, "'completion' is missing", id="missing-field"),
    pytest.param("bad.jsonl", GOOD + '{"prompt": "", "completion": "c"}\n', 2, "'prompt' is empty", id="empty"),
    pytest.param("bad.jsonl", "\n" + GOOD + "\n" + '{"prompt": "p"}\n', 4, "'completion' is missing", id="blank"),
    pytest.param("bad.jsonl", GOOD + '{"prompt": 5, "completion": "c"}\n', 2, "is a number here", id="type"),
    pytest.param("bad.jsonl", "", None, "the file is empty", id="empty-file"),
    pytest.param("bad.jsonl", "\n\n", None, "no rows", id="blank-file"),
    pytest.param(
        "bad.jsonl", GOOD.encode() + b'{"prompt": "caf\xe9", "completion": "c"}\n', 2, "not valid UTF-8", id="latin-1"
    ),
    pytest.param("bad.jsonl", GOOD.encode("utf-16"), None, "encoded as UTF-16", id="utf-16"),
    pytest.param("bad.csv", "prompt,completion\na,b\nc,d,e\n", 3, "expected 2 fields", id="csv-fields"),
    pytest.param("bad.csv", "prompt,completion\na,b\n,d\n", 3, "'prompt' is empty", id="csv-empty"),
    pytest.param("bad.csv", "prompt,completion\n", None, "no rows", id="csv-header-only"),
    pytest.param("bad.csv", "prompt,prompt\na,b\n", 1, "duplicate", id="csv-header"),
    pytest.param("bad.parquet", b"PAR1 this is not parquet", None, "not a readable Parquet file", id="parquet"),
    pytest.param("bad.txt", "prompt", None, "unknown file type", id="extension"),
]


@pytest.mark.parametrize(("name", "content", "row", "reason"), BAD_FILES)
def test_bad_files_are_refused_with_file_row_and_reason_and_nothing_is_written(
    platform: Platform, project: str, tmp_path: Path, name: str, content: str | bytes, row: int | None, reason: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetFormatError) as caught:
        platform.datasets.push(project, "bad", path, actor="test")
    error = caught.value
    assert error.file == str(path)
    assert error.row == row, str(error)
    assert reason in error.reason
    assert str(path) in str(error)
    assert nothing_written(platform)


def test_row_numbers_stay_exact_across_parser_blocks(
    platform: Platform, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "BLOCK_BYTES", 4096)  # many small Arrow batches
    lines = [json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(5000)]
    lines[4321] = json.dumps({"prompt": f"q{4321}", "completion": ""})
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"row 4322: 'completion' is empty"):
        platform.datasets.push(project, "long", path, actor="test")
    lines[4321] = "{broken"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"row 4322: malformed JSON"):
        platform.datasets.push(project, "long", path, actor="test")
    assert nothing_written(platform)


def test_names_and_projects_are_checked(platform: Platform, project: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "qa.jsonl", qa_rows(2))
    with pytest.raises(NotFound, match="project 'nope' not found"):
        platform.datasets.push("nope", "qa", source, actor="t")
    with pytest.raises(InvalidInput, match=r"dataset name '\.\./etc'"):
        platform.datasets.push(project, "../etc", source, actor="t")
    with pytest.raises(InvalidInput, match="label"):
        platform.datasets.push(project, "qa", source, labels=["bad label"], actor="t")
    with pytest.raises(NotFound, match="no such file"):
        platform.datasets.push(project, "qa", tmp_path / "missing.jsonl", actor="t")
    assert nothing_written(platform)


def test_append_makes_an_incremental_version_without_copying_rows(
    platform: Platform, project: str, tmp_path: Path
) -> None:
    parent = platform.datasets.push(project, "qa", write_jsonl(tmp_path / "a.jsonl", qa_rows(30)), actor="t").version
    more = write_jsonl(tmp_path / "b.jsonl", qa_rows(20, start=30))
    child = platform.datasets.append(project, "qa@1", more, actor="t")
    assert child.created
    version = child.version
    assert (version.version, version.parent_version, version.derivation) == (2, 1, "append")
    assert version.row_count == 50
    assert version.parts[0] == parent.parts[0]  # the parent's rows are referenced, not rewritten
    assert version.stats["id"] == {"measure": "value", "rows": 50, "nulls": 0, "min": 0, "max": 49, "mean": 24.5}
    assert platform.datasets.read_table(version).to_pylist() == qa_rows(50)
    assert platform.datasets.get(project, "qa@1").row_count == 30  # the parent is unchanged
    assert platform.datasets.append(project, "qa@1", more, actor="t").version.id == version.id


def test_append_refuses_rows_of_another_shape(platform: Platform, project: str, tmp_path: Path) -> None:
    platform.datasets.push(project, "qa", write_jsonl(tmp_path / "a.jsonl", qa_rows(3)), actor="t")
    blobs = sorted(platform.artifacts.iter_keys())
    other = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(DatasetFormatError, match="holds prompt_completion rows but the parent version holds"):
        platform.datasets.append(project, "qa", other, actor="t")
    retyped = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "p", "answer": 3, "id": 1}])
    with pytest.raises(DatasetFormatError, match="differ from the parent version"):
        platform.datasets.append(project, "qa", retyped, actor="t")
    assert sorted(platform.artifacts.iter_keys()) == blobs
    assert len(platform.datasets.versions(project, "qa")) == 1


def test_split_is_seeded_disjoint_complete_and_idempotent(platform: Platform, project: str, tmp_path: Path) -> None:
    platform.datasets.push(project, "qa", write_jsonl(tmp_path / "a.jsonl", qa_rows(200)), actor="t")
    train, evaluation = platform.datasets.split(project, "qa@1", eval_ratio=0.25, seed=7, actor="t")
    assert train.created and evaluation.created
    assert (train.version.row_count, evaluation.version.row_count) == (150, 50)
    assert train.version.labels == ["train"] and evaluation.version.labels == ["eval"]
    assert train.version.parent_version == 1 and train.version.derivation == "split"
    train_ids = set(platform.datasets.read_table(train.version).column("id").to_pylist())
    eval_ids = set(platform.datasets.read_table(evaluation.version).column("id").to_pylist())
    assert train_ids.isdisjoint(eval_ids) and train_ids | eval_ids == set(range(200))

    again = platform.datasets.split(project, "qa@1", eval_ratio=0.25, seed=7, actor="t")
    assert [o.created for o in again] == [False, False]
    assert again[1].version.id == evaluation.version.id
    other = platform.datasets.split(project, "qa@1", eval_ratio=0.25, seed=8, actor="t")
    assert set(platform.datasets.read_table(other[1].version).column("id").to_pylist()) != eval_ids
    assert platform.datasets.get(project, "qa@eval").id == other[1].version.id  # newest with the label

    for ratio in (0.0, 1.0, 0.001):
        with pytest.raises(InvalidInput, match="eval_ratio"):
            platform.datasets.split(project, "qa@1", eval_ratio=ratio, actor="t")


def test_preview_reads_only_what_it_needs(platform: Platform, project: str, tmp_path: Path) -> None:
    version = platform.datasets.push(project, "qa", write_jsonl(tmp_path / "a.jsonl", qa_rows(100)), actor="t").version
    assert platform.datasets.preview(version, 3) == qa_rows(3)
    with pytest.raises(InvalidInput):
        platform.datasets.preview(version, 0)
