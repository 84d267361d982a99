"""What every check type builds on: the `Check` contract, `CheckSpec` and `CheckResult`, the
`CHECK_TYPES` registry with `register` and `build_check`, and the param and result helpers the
check modules share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deepext.errors import InvalidInput

SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True)
class CheckSpec:
    """A check as a suite declares it."""

    name: str  # unique in its suite; what results and gates refer to
    type: str  # a registered check type (see CHECK_TYPES)
    params: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"
    message: str = ""  # shown when the check fails (business rules)
    weight: float = 1.0


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    score: float  # in [0, 1]; 1.0 or 0.0 for pass/fail checks
    reason: str = ""  # why it failed (or what matched), one line
    path: str | None = None  # JSON path of the failing part, for JSON checks


class Check:
    """A configured check. Subclasses implement `_evaluate`; `evaluate` turns any exception from a
    model's output into a failed result instead of a crashed run, and puts the spec's `message`
    in front of the reason of a failed result."""

    def __init__(self, spec: CheckSpec) -> None:
        self.spec = spec

    def evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        try:
            result = self._evaluate(output if isinstance(output, str) else str(output), row)
        except Exception as exc:  # a check bug on odd input is that example's failure, not the run's
            result = CheckResult(False, 0.0, f"check error: {type(exc).__name__}: {exc}")
        if not result.passed and self.spec.message:
            result = replace(
                result, reason=f"{self.spec.message}: {result.reason}" if result.reason else self.spec.message
            )
        return result

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        raise NotImplementedError


CHECK_TYPES: dict[str, Callable[[CheckSpec], Check]] = {}


def register(name: str) -> Callable[[type[Check]], type[Check]]:
    def add(cls: type[Check]) -> type[Check]:
        CHECK_TYPES[name] = cls
        return cls

    return add


def build_check(spec: CheckSpec) -> Check:
    """A ready check, or InvalidInput naming the field when the spec is wrong (type, params, severity)."""
    if spec.type not in CHECK_TYPES:
        raise InvalidInput(
            f"check {spec.name!r}: unknown type {spec.type!r}; one of {', '.join(sorted(CHECK_TYPES))}", field="type"
        )
    if spec.severity not in SEVERITIES:
        raise InvalidInput(f"check {spec.name!r}: severity must be one of {', '.join(SEVERITIES)}", field="severity")
    if not isinstance(spec.params, dict):
        raise InvalidInput(f"check {spec.name!r}: params must be a mapping, got {spec.params!r}", field="params")
    weight = spec.weight
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
        raise InvalidInput(f"check {spec.name!r}: weight must be a finite number >= 0, got {weight!r}", field="weight")
    return CHECK_TYPES[spec.type](spec)


# --- params, validated when a check is built -------------------------------------------------------

_UNSET: Any = object()


class _Params:
    """Typed access to a spec's params; every wrong value raises InvalidInput naming "params.<name>"."""

    def __init__(self, spec: CheckSpec, allowed: Iterable[str]) -> None:
        self.spec = spec
        self.raw = spec.params
        allowed = set(allowed)
        for name in self.raw:
            if name not in allowed:
                raise self.error(name, f"unknown param; this check takes {', '.join(sorted(allowed)) or 'none'}")

    def error(self, name: str, problem: str) -> InvalidInput:
        return InvalidInput(f"check {self.spec.name!r}: params.{name}: {problem}", field=f"params.{name}")

    def get(self, name: str, default: Any = _UNSET) -> Any:
        if name not in self.raw:
            if default is _UNSET:
                raise self.error(name, "required")
            return default
        return self.raw[name]

    def text(self, name: str, default: Any = _UNSET, *, empty: bool = False) -> Any:
        value = self.get(name, default)
        if value is not default and (not isinstance(value, str) or (not empty and not value.strip())):
            raise self.error(name, f"expected {'a' if empty else 'a non-empty'} string, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def number(self, name: str, default: Any = _UNSET, *, low: float | None = None, high: float | None = None) -> Any:
        value = self.get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(name, f"expected a number, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.error(name, f"expected a number in [{low}, {high}], got {value!r}")
        return float(value)

    def integer(self, name: str, default: Any = _UNSET, *, low: int = 0) -> Any:
        value = self.get(name, default)
        if value is not default and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise self.error(name, f"expected an integer >= {low}, got {value!r}")
        return value

    def choice(self, name: str, options: Sequence[str], default: Any = _UNSET) -> Any:
        value = self.get(name, default)
        if value not in options:
            raise self.error(name, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def texts(self, name: str, default: Any = _UNSET) -> Any:
        """A non-empty list of non-empty strings (a single string is a list of one)."""
        value = self.get(name, default)
        if value is default:
            return value
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"expected a non-empty list of non-empty strings, got {value!r}")
        return value


def _fail(reason: str, path: str | None = None) -> CheckResult:
    return CheckResult(False, 0.0, reason, path)


def _pass(reason: str = "") -> CheckResult:
    return CheckResult(True, 1.0, reason)


def _scored(score: float, threshold: float, what: str) -> CheckResult:
    passed = score >= threshold
    return CheckResult(passed, score, f"{what} {score:.3f} {'>=' if passed else '<'} {threshold:g}")


def _short(value: Any, limit: int = 80) -> str:
    """A value for a reason: text quoted, anything else as its repr, cut at `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text
