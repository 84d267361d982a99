"""Reading a model output's JSON and the value at a dotted field path ("items[0].price"), with a
failed result when it is not there. Shared by the JSON checks and the business rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from deepext.eval.checks.base import CheckResult, _fail
from deepext.grpo import rewards


def _field_path(spec: str) -> list[str]:
    """A dotted field path as parts: items[0].price or items.0.price -> ["items", "0", "price"]."""
    return [part for part in re.sub(r"\[(\d+)\]", r".\1", spec).split(".") if part]


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit()


def _lookup(value: Any, parts: Sequence[str]) -> tuple[bool, Any, str]:
    """(found, the value at `parts`, its `json_path` - or that of the first part missing). A digit part
    indexes a list."""
    walked: list[str | int] = []
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
            walked.append(part)
        elif isinstance(value, list) and _is_index(part) and int(part) < len(value):
            value = value[int(part)]
            walked.append(int(part))
        else:
            walked.append(int(part) if isinstance(value, list) and _is_index(part) else part)
            return False, None, rewards.json_path(walked)
    return True, value, rewards.json_path(walked)


def _output_json(output: str, allow_fenced: bool) -> tuple[Any, CheckResult | None]:
    """The output's JSON value, or a failed result saying why there is none."""
    try:
        return rewards.extract_json(output, allow_fenced), None
    except ValueError as exc:
        return None, _fail(f"not JSON: {exc}")


def _output_field(output: str, field_parts: Sequence[str], allow_fenced: bool) -> tuple[Any, str, CheckResult | None]:
    """(the value at a field of the output's JSON, its path, None) or (None, path, a failed result)."""
    value, failed = _output_json(output, allow_fenced)
    if failed is not None:
        return None, "$", failed
    found, value, path = _lookup(value, field_parts)
    if not found:
        return None, path, _fail(f"{path} is missing", path)
    return value, path, None
