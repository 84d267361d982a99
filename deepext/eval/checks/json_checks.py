"""Checks on the JSON an output holds: json_valid, json_schema (the `json_schema` reward's validator),
json_keys (required keys and their JSON types)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deepext.eval.checks.base import Check, CheckResult, CheckSpec, _fail, _Params, _pass, register
from deepext.eval.checks.json_fields import _field_path, _lookup, _output_json
from deepext.grpo import rewards

if TYPE_CHECKING:
    from jsonschema.protocols import Validator


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _json_type(value: Any) -> str:
    return next(name for name, test in _JSON_TYPES.items() if name != "integer" and test(value))


@register("json_valid")
class JsonValid(Check):
    """The output holds JSON (`extract_json`: the whole output, else a ```json block, else the first
    {...} object or [...] array in prose; `allow_fenced: false` wants the whole output). The `valid_json`
    reward's test."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.allow_fenced = _Params(spec, ("allow_fenced",)).boolean("allow_fenced", True)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        value, failed = _output_json(output, self.allow_fenced)
        return failed or _pass(_json_type(value))


@register("json_schema")
class JsonSchema(Check):
    """The output's JSON conforms to a JSON Schema: `schema` (a mapping or its JSON text, compiled when
    the suite loads) or else the row's `schema_field` (default "schema"). A failure gives the failing
    part's path (e.g. "$.items[2].price") in `path` and the validator's message in `reason`. The
    `json_schema` reward decides conformance with the same `schema_violation`."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("schema", "schema_field", "allow_fenced"))
        self.allow_fenced = params.boolean("allow_fenced", True)
        self.schema_field: str = params.text("schema_field", "schema")
        self.validator: Validator | None = None
        if "schema" in spec.params:
            if "schema_field" in spec.params:
                raise params.error("schema_field", "give schema or schema_field, not both")
            try:
                self.validator = rewards.schema_validator(spec.params["schema"])
            except ValueError as exc:
                raise params.error("schema", str(exc)) from exc

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        validator = self.validator
        if validator is None:
            schema = row.get(self.schema_field) if isinstance(row, dict) else None
            if schema is None:
                return _fail(f"row has no {self.schema_field!r} field")
            try:
                validator = rewards.schema_validator(schema)
            except ValueError as exc:
                return _fail(f"row {self.schema_field!r} is not a JSON Schema: {exc}")
        value, failed = _output_json(output, self.allow_fenced)
        if failed is not None:
            return failed
        violation = rewards.schema_violation(value, validator)
        if violation is None:
            return _pass()
        return _fail(f"{violation.path}: {violation.message[:300]}", violation.path)


@register("json_keys")
class JsonKeys(Check):
    """The output's JSON object has every key of `required` ({key: type}), each of its type: string,
    number, integer, boolean, array, object or null (or a list of them, any of which will do). A key
    may be a dotted path ("customer.email", "items.0.price"). A failure names the first missing or
    mistyped key, in `required`'s order, by its path."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("required", "allow_fenced"))
        self.allow_fenced = params.boolean("allow_fenced", True)
        required = params.get("required")
        if not isinstance(required, dict) or not required:
            raise params.error("required", f"expected a mapping of key -> type name, got {required!r}")
        self.required: list[tuple[list[str], list[str]]] = []
        for key, kind in required.items():
            kinds = [kind] if isinstance(kind, str) else kind
            if not isinstance(key, str) or not _field_path(key):
                raise params.error("required", f"expected a key name, got {key!r}")
            if not isinstance(kinds, list) or not kinds or not all(k in _JSON_TYPES for k in kinds):
                raise params.error(f"required.{key}", f"expected one of {', '.join(_JSON_TYPES)}, got {kind!r}")
            self.required.append((_field_path(key), kinds))

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        value, failed = _output_json(output, self.allow_fenced)
        if failed is not None:
            return failed
        if not isinstance(value, dict):
            return _fail(f"expected a JSON object, got {_json_type(value)}", "$")
        for parts, kinds in self.required:
            found, got, path = _lookup(value, parts)
            if not found:
                return _fail(f"{path} is missing", path)
            if not any(_JSON_TYPES[k](got) for k in kinds):
                return _fail(f"{path} is {_json_type(got)}, expected {' or '.join(kinds)}", path)
        return _pass()
