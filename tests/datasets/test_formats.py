"""Format detection and the row rules, on in-memory Arrow batches (pure, fast)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from deepext.datasets.formats import check_schema, detect_format, find_row_problem


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages"], "chat"),
        (["messages", "prompt"], "chat"),
        (["prompt", "chosen", "rejected"], "preference"),
        (["prompt", "completion", "id"], "prompt_completion"),
        (["prompt", "answer"], "prompt_reference"),
        (["prompt", "solution"], "prompt_reference"),
        (["prompt", "meta"], "prompt_only"),
    ],
)
def test_detect_format(columns: list[str], expected: str) -> None:
    assert detect_format(columns).name == expected


def test_unknown_columns_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"no known dataset format for columns \['input', 'output'\]"):
        detect_format(["input", "output"])


def batch(**columns: list) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(columns)


def test_good_rows_pass() -> None:
    fmt = detect_format(["prompt", "completion"])
    assert find_row_problem(fmt, batch(prompt=["a", "b"], completion=["c", "d"])) is None


def test_first_missing_or_empty_field_is_reported() -> None:
    fmt = detect_format(["prompt", "completion"])
    problem = find_row_problem(fmt, batch(prompt=["a", "b", "", None], completion=["c", None, "e", "f"]))
    assert problem is not None
    assert (problem.index, problem.reason) == (1, "'completion' is missing")


def test_reference_may_be_a_number_but_not_missing() -> None:
    fmt = detect_format(["prompt", "answer"])
    good = batch(prompt=["1+1?", "2+2?"], answer=[2, 4])
    assert check_schema(fmt, good.schema) is None
    assert find_row_problem(fmt, good) is None
    problem = find_row_problem(fmt, batch(prompt=["x", "y"], answer=[1, None]))
    assert problem is not None and problem.index == 1 and "answer" in problem.reason


def test_text_columns_must_hold_text() -> None:
    fmt = detect_format(["prompt", "completion"])
    assert check_schema(fmt, batch(prompt=[1], completion=["x"]).schema) == (
        "column 'prompt' must hold text, found int64"
    )


def test_chat_rows_are_checked_per_message() -> None:
    fmt = detect_format(["messages"])
    good = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    assert find_row_problem(fmt, batch(messages=good)) is None
    rows = [*good, [{"role": "user", "content": "ok"}], [{"role": "robot", "content": "beep"}]]
    problem = find_row_problem(fmt, batch(messages=rows))
    assert problem is not None and problem.index == 2 and "'robot'" in problem.reason
    problem = find_row_problem(fmt, batch(messages=[*good, []]))
    assert problem is not None and (problem.index, problem.reason) == (1, "'messages' is empty")
    problem = find_row_problem(fmt, batch(messages=[*good, [{"role": "user", "content": None}]]))
    assert problem is not None and problem.index == 1 and "content" in problem.reason


def test_chat_column_must_be_a_list_of_role_content_objects() -> None:
    fmt = detect_format(["messages"])
    assert "must be a list" in (check_schema(fmt, batch(messages=["just text"]).schema) or "")
    reason = check_schema(fmt, batch(messages=[[{"role": "user"}]]).schema)
    assert reason is not None and "content" in reason
