"""Dataset formats: which one a table's columns mean, and the row rules each format enforces.

Detection looks only at column names (first match wins):

| format              | columns                                     | used by            |
|---------------------|---------------------------------------------|--------------------|
| `chat`              | `messages`: list of {role, content}         | SFT                |
| `preference`        | `prompt`, `chosen`, `rejected`              | DPO-style training |
| `prompt_completion` | `prompt`, `completion`                      | SFT                |
| `prompt_reference`  | `prompt` + `answer` / `reference` / `solution` | GRPO, evaluation |
| `prompt_only`       | `prompt`                                    | GRPO with a custom reward |

Rules are checked on whole Arrow batches (vectorized); a violation reports the first offending row
of the batch, so a million-row file is validated at Arrow speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

CHAT_ROLES = ("system", "user", "assistant", "tool")
REFERENCE_COLUMNS = ("answer", "reference", "solution")


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    text_columns: tuple[str, ...]  # must be non-empty strings
    reference_column: str | None = None  # string or number, non-null
    chat_column: str | None = None


@dataclass(frozen=True)
class RowProblem:
    """The first bad row of a batch: its 0-based index in the batch and what is wrong."""

    index: int
    reason: str


def detect_format(columns: list[str]) -> DatasetFormat:
    """The format a table with these columns holds; ValueError naming what was expected if none."""
    names = set(columns)
    if "messages" in names:
        return DatasetFormat("chat", (), chat_column="messages")
    if {"prompt", "chosen", "rejected"} <= names:
        return DatasetFormat("preference", ("prompt", "chosen", "rejected"))
    if {"prompt", "completion"} <= names:
        return DatasetFormat("prompt_completion", ("prompt", "completion"))
    if "prompt" in names:
        for reference in REFERENCE_COLUMNS:
            if reference in names:
                return DatasetFormat("prompt_reference", ("prompt",), reference_column=reference)
        return DatasetFormat("prompt_only", ("prompt",))
    raise ValueError(
        f"no known dataset format for columns {sorted(names)}: expected 'messages', "
        "'prompt'+'completion', 'prompt'+'answer'/'reference'/'solution', "
        "'prompt'+'chosen'+'rejected', or 'prompt'"
    )


def check_schema(fmt: DatasetFormat, schema: pa.Schema) -> str | None:
    """A reason the columns' types cannot hold `fmt`, or None. Checked once per file."""
    for name in fmt.text_columns:
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            return f"column {name!r} must hold text, found {kind}"
    if fmt.reference_column:
        kind = schema.field(fmt.reference_column).type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_null(kind)
        ):
            return f"column {fmt.reference_column!r} must hold text or a number, found {kind}"
    if fmt.chat_column:
        kind = schema.field(fmt.chat_column).type
        if pa.types.is_null(kind):
            return None
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_struct(kind.value_type):
            return f"column {fmt.chat_column!r} must be a list of {{role, content}} objects, found {kind}"
        fields = {kind.value_type.field(i).name for i in range(kind.value_type.num_fields)}
        missing = {"role", "content"} - fields
        if missing:
            return f"column {fmt.chat_column!r}: messages lack {sorted(missing)}"
    return None


def _first(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first true value of a boolean mask (nulls count as false), or None."""
    filled = pc.fill_null(mask, False)
    if not pc.any(filled).as_py():
        return None
    return int(pc.index(filled, True).as_py())


def find_row_problem(fmt: DatasetFormat, batch: pa.RecordBatch) -> RowProblem | None:
    """The first row of `batch` that breaks `fmt`'s rules, or None when every row is good."""
    problems: list[RowProblem] = []
    for name in fmt.text_columns:
        column = batch.column(name)
        index = _first(pc.is_null(column))
        if index is not None:
            problems.append(RowProblem(index, f"{name!r} is missing"))
        if not pa.types.is_null(column.type):
            index = _first(pc.equal(pc.utf8_length(column), 0))
            if index is not None:
                problems.append(RowProblem(index, f"{name!r} is empty"))
    if fmt.reference_column:
        index = _first(pc.is_null(batch.column(fmt.reference_column)))
        if index is not None:
            problems.append(RowProblem(index, f"{fmt.reference_column!r} is missing"))
    if fmt.chat_column:
        problems.extend(_chat_problems(batch.column(fmt.chat_column)))
    return min(problems, key=lambda p: p.index) if problems else None


def _chat_problems(messages: pa.Array) -> list[RowProblem]:
    problems = []
    index = _first(pc.is_null(messages))
    if index is not None:
        problems.append(RowProblem(index, "'messages' is missing"))
    if pa.types.is_null(messages.type):
        return problems
    index = _first(pc.equal(pc.list_value_length(messages), 0))
    if index is not None:
        problems.append(RowProblem(index, "'messages' is empty"))
    flat = pc.list_flatten(messages)
    parents = pc.list_parent_indices(messages)
    roles = pc.struct_field(flat, "role")
    contents = pc.struct_field(flat, "content")
    bad_role = pc.invert(pc.fill_null(pc.is_in(roles, value_set=pa.array(CHAT_ROLES)), False))
    position = _first(bad_role)
    if position is not None:
        role = roles[position].as_py()
        problems.append(RowProblem(int(parents[position].as_py()), f"message role {role!r} is not one of {CHAT_ROLES}"))
    position = _first(pc.is_null(contents))
    if position is not None:
        problems.append(RowProblem(int(parents[position].as_py()), "a message has no 'content'"))
    return problems
