"""Business rules: the `rule` check type and the rules it dispatches to by `params.rule`
(field_range, allowed_values, must_mention, must_not_mention, max_length, min_length, pii,
consistency), each with its own params, validated when the suite loads."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from deepext.errors import InvalidInput
from deepext.eval.checks.base import Check, CheckResult, CheckSpec, _fail, _Params, _pass, _short, register
from deepext.eval.checks.json_fields import _field_path, _lookup, _output_field
from deepext.eval.checks.pii import PII_KINDS, find_pii
from deepext.eval.checks.text import _NO_SPACE_SCRIPT, word_count
from deepext.grpo import rewards

_RULES: dict[str, type[Check]] = {}


def _rule(name: str) -> Callable[[type[Check]], type[Check]]:
    def add(cls: type[Check]) -> type[Check]:
        _RULES[name] = cls
        return cls

    return add


@register("rule")
class Rule(Check):
    """A business rule, `params.rule` naming which: field_range, allowed_values, must_mention,
    must_not_mention, max_length, min_length, pii, consistency (see each `_rule` class for its params).
    The spec's `severity` is the rule's; its `message` leads the reason when the rule fails."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        name = spec.params.get("rule")
        if not isinstance(name, str) or name not in _RULES:
            raise InvalidInput(
                f"check {spec.name!r}: params.rule: expected one of {', '.join(_RULES)}, got {name!r}",
                field="params.rule",
            )
        self.rule = _RULES[name](spec)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        return self.rule._evaluate(output, row)


@_rule("field_range")
class FieldRange(Check):
    """A number at the output JSON's `field` (dotted path) lies in [`min`, `max`] (either may be left out)."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("rule", "field", "min", "max", "allow_fenced"))
        self.field = _field_path(params.text("field"))
        self.low, self.high = params.number("min", None), params.number("max", None)
        if self.low is None and self.high is None:
            raise params.error("min", "give min, max or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise params.error("max", f"max ({self.high:g}) is below min ({self.low:g})")
        self.allow_fenced = params.boolean("allow_fenced", True)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        value, path, failed = _output_field(output, self.field, self.allow_fenced)
        if failed is not None:
            return failed
        number = rewards.as_number(value)
        if number is None or not math.isfinite(number):
            return _fail(f"{path} is {_short(value, 40)}, not a number", path)
        if self.low is not None and number < self.low:
            return _fail(f"{path} = {number:g} is below {self.low:g}", path)
        if self.high is not None and number > self.high:
            return _fail(f"{path} = {number:g} is above {self.high:g}", path)
        return _pass(f"{path} = {number:g}")


@_rule("allowed_values")
class AllowedValues(Check):
    """The output JSON's `field` holds one of `values` (compared as `values_equal`: numbers with numbers,
    text case-sensitively unless `case_sensitive: false`)."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("rule", "field", "values", "case_sensitive", "allow_fenced"))
        self.field = _field_path(params.text("field"))
        self.values = params.get("values")
        if not isinstance(self.values, list) or not self.values:
            raise params.error("values", f"expected a non-empty list, got {self.values!r}")
        self.case_sensitive = params.boolean("case_sensitive", True)
        self.allow_fenced = params.boolean("allow_fenced", True)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        value, path, failed = _output_field(output, self.field, self.allow_fenced)
        if failed is not None:
            return failed
        if any(rewards.values_equal(value, allowed, None, self.case_sensitive) for allowed in self.values):
            return _pass()
        return _fail(f"{path} = {_short(value, 40)} is not one of {_short(self.values, 120)}", path)


def _edge_is_word(char: str) -> bool:
    """Whether a term edge needs a word boundary: a letter or digit of a script that spaces its words."""
    return (char.isalnum() or char == "_") and not re.match(f"[{_NO_SPACE_SCRIPT}]", char)


def _term_pattern(term: str) -> re.Pattern[str]:
    """`term` as a whole word (its edges not glued to other letters), casefolded and NFKC-normalized."""
    term = unicodedata.normalize("NFKC", term).casefold()
    before = r"(?<![\w])" if _edge_is_word(term[0]) else ""
    after = r"(?![\w])" if _edge_is_word(term[-1]) else ""
    return re.compile(before + re.escape(term) + after)


def _whole(text: str, match: re.Match[str]) -> bool:
    """A match not followed by a combining mark, which would make it part of a longer letter."""
    return match.end() == len(text) or not unicodedata.category(text[match.end()]).startswith("M")


class _Mentions(Check):
    """Terms looked up as whole words, case-insensitively, after NFKC: "Paris" is in "in paris." but
    not in "Parisian"; a term in a script without spaces (CJK) is a substring."""

    def __init__(self, spec: CheckSpec, extra: Sequence[str] = ()) -> None:
        super().__init__(spec)
        self.params = _Params(spec, ("rule", "terms", *extra))
        terms: list[str] = self.params.texts("terms")
        self.terms = [(term, _term_pattern(term.strip() or term)) for term in terms]

    def found(self, output: str) -> list[str]:
        text = unicodedata.normalize("NFKC", output).casefold()
        return [term for term, pattern in self.terms if any(_whole(text, m) for m in pattern.finditer(text))]


@_rule("must_mention")
class MustMention(_Mentions):
    """The output mentions every one of `terms` (`mode: any`: at least one)."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec, ("mode",))
        self.mode = self.params.choice("mode", ("all", "any"), "all")

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        found = self.found(output)
        missing = [term for term, _ in self.terms if term not in found]
        if not missing or (self.mode == "any" and found):
            return _pass(f"mentions {', '.join(found)}")
        return _fail(f"does not mention {', '.join(repr(t) for t in missing[:10])}")


@_rule("must_not_mention")
class MustNotMention(_Mentions):
    """The output mentions none of `terms`."""

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        found = self.found(output)
        return _fail(f"mentions {', '.join(repr(t) for t in found[:10])}") if found else _pass()


class _Length(Check):
    """A length limit: `chars` (Unicode code points) or `words` (see `word_count`), one of them."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("rule", "chars", "words"))
        chars, words = params.integer("chars", None), params.integer("words", None)
        if (chars is None) == (words is None):
            raise params.error("chars", "give chars or words (one of them)")
        self.unit, self.limit = ("chars", chars) if chars is not None else ("words", words)

    def length(self, output: str) -> int:
        return len(output) if self.unit == "chars" else word_count(output)


@_rule("max_length")
class MaxLength(_Length):
    """The output is at most `chars` characters or `words` words long."""

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        n = self.length(output)
        return _pass(f"{n} {self.unit}") if n <= self.limit else _fail(f"{n} {self.unit} > max {self.limit}")


@_rule("min_length")
class MinLength(_Length):
    """The output is at least `chars` characters or `words` words long."""

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        n = self.length(output)
        return _pass(f"{n} {self.unit}") if n >= self.limit else _fail(f"{n} {self.unit} < min {self.limit}")


@_rule("pii")
class Pii(Check):
    """The output holds no personal data of the `kinds` (default all): email, phone, iban, credit_card
    (see `find_pii`). A failure names what was found, masked ("credit_card ************1111")."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("rule", "kinds"))
        self.kinds: list[str] = params.texts("kinds", list(PII_KINDS))
        unknown = [k for k in self.kinds if k not in PII_KINDS]
        if unknown:
            raise params.error("kinds", f"unknown {', '.join(unknown)}; use any of {', '.join(PII_KINDS)}")

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        found = [(kind, masked) for kind, masked in find_pii(output) if kind in self.kinds]
        if not found:
            return _pass()
        listed = ", ".join(f"{kind} {masked}" for kind, masked in found[:5])
        more = f" (+{len(found) - 5} more)" if len(found) > 5 else ""
        return _fail(f"found {listed}{more}")


@_rule("consistency")
class Consistency(Check):
    """The output JSON's `field` relates to the input row's `row_field` (both dotted paths) by `op`:
    eq (equal, as `values_equal`), ne (not equal), in (the output value is an element of the row's list,
    a key of its mapping, or a substring of its text), contains (the other way round). Text compares
    case-sensitively unless `case_sensitive: false`."""

    OPS = ("eq", "ne", "in", "contains")

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("rule", "field", "row_field", "op", "case_sensitive", "allow_fenced"))
        self.field = _field_path(params.text("field"))
        self.row_field = _field_path(params.text("row_field"))
        self.op = params.choice("op", self.OPS, "eq")
        self.case_sensitive = params.boolean("case_sensitive", True)
        self.allow_fenced = params.boolean("allow_fenced", True)

    def _holds(self, item: Any, container: Any) -> bool:
        if isinstance(container, str) and isinstance(item, str):
            return item in container if self.case_sensitive else item.casefold() in container.casefold()
        if isinstance(container, list):
            return any(rewards.values_equal(item, x, None, self.case_sensitive) for x in container)
        if isinstance(container, dict):
            return isinstance(item, str) and item in container
        return False

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        found, expected, _ = _lookup(row if isinstance(row, dict) else {}, self.row_field)
        if not found:
            return _fail(f"row has no {'.'.join(self.row_field)!r} field")
        value, path, failed = _output_field(output, self.field, self.allow_fenced)
        if failed is not None:
            return failed
        if self.op in ("eq", "ne"):
            holds = rewards.values_equal(value, expected, None, self.case_sensitive) == (self.op == "eq")
        else:
            holds = self._holds(value, expected) if self.op == "in" else self._holds(expected, value)
        if holds:
            return _pass()
        words = {"eq": "does not equal", "ne": "equals", "in": "is not in", "contains": "does not contain"}
        where = ".".join(self.row_field)
        return _fail(f"{path} = {_short(value, 40)} {words[self.op]} row {where} = {_short(expected, 40)}", path)
