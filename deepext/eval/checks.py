"""Evaluation checks: one output (and its dataset row) in, pass/score/reason out.

Every check has one shape: `check.evaluate(output, row) -> CheckResult`. A check never raises on
what a model wrote (malformed JSON, unicode, empty or huge text): that is a failed example with a
reason. Only a wrong check *definition* raises, when the suite is loaded (InvalidInput naming the
field, e.g. "params.pattern"). Checks that mean the same thing as a GRPO reward share its implementation
(`deepext.grpo.rewards`): a JSON Schema check is the `json_schema` reward.

Types (the `CHECK_TYPES` keys; docs/eval.md lists their params):
- against a reference in the row: exact_match, normalized_match, numeric, contains, regex, token_f1,
  rouge_l, multiple_choice;
- JSON: json_valid, json_schema, json_keys;
- business rules: rule (field_range, allowed_values, must_mention, must_not_mention, max_length,
  min_length, pii, consistency);
- llm_judge: a rubric scored by a judge model that the runner asks (see `LLMJudge`).

Cost is bounded on any output: quadratic work (ROUGE-L's LCS) reads at most `max_tokens` tokens, a
regex searches at most `max_chars` characters, and JSON extraction is linear (`extract_json`).
"""

from __future__ import annotations

import bisect
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from deepext.errors import InvalidInput
from deepext.grpo import rewards

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

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


# --- text: normalization, tokens, F1, LCS --------------------------------------------------------------


class _PunctuationTable(dict[int, int | None]):
    """`str.translate` table deleting Unicode punctuation (category P*) and ASCII punctuation
    (which includes symbols such as $ + < = > ^ ` | ~, as SQuAD's normalizer does); filled lazily."""

    def __missing__(self, code: int) -> int | None:
        char = chr(code)
        value = None if unicodedata.category(char).startswith("P") or char in string.punctuation else code
        self[code] = value
        return value


_PUNCTUATION = _PunctuationTable()
# scripts written without spaces between words: each character is a token of its own
_NO_SPACE_SCRIPT = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_TOKEN = re.compile(rf"[{_NO_SPACE_SCRIPT}]|[^\s{_NO_SPACE_SCRIPT}]+")
_ARTICLES = frozenset({"a", "an", "the"})


def normalize_text(
    text: str, *, case_sensitive: bool = False, remove_punctuation: bool = True, remove_articles: bool = False
) -> list[str]:
    """`text` as comparable tokens: Unicode NFKC (full-width forms, composed accents), casefolded unless
    `case_sensitive`, punctuation deleted, the English articles a/an/the dropped if `remove_articles`,
    split on whitespace with each CJK character a token of its own."""
    text = unicodedata.normalize("NFKC", text)
    if not case_sensitive:
        text = text.casefold()
    if remove_punctuation:
        text = text.translate(_PUNCTUATION)
    tokens = _TOKEN.findall(text)
    return [t for t in tokens if t.casefold() not in _ARTICLES] if remove_articles else tokens


def token_f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """SQuAD token F1: with overlap = the tokens in common (as multisets), precision = overlap /
    len(prediction), recall = overlap / len(reference), F1 = 2PR / (P + R). Two empty sides score 1.0,
    one empty side 0.0."""
    if not prediction or not reference:
        return float(not prediction and not reference)
    overlap = sum((Counter(prediction) & Counter(reference)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(prediction), overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences, bit-parallel (Hyyro 2004:
    one big-integer step per token of `a`), so O(len(a) * len(b) / 64) machine words."""
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full  # a zero bit marks a column where the LCS grows
    for token in a:
        match = row & masks.get(token, 0)
        row = ((row + match) | (row - match)) & full
    return len(b) - row.bit_count()


def rouge_l(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F-measure (beta = 1): with lcs = `lcs_length`, P = lcs / len(prediction),
    R = lcs / len(reference), F = 2PR / (P + R). Two empty sides score 1.0, one empty side 0.0."""
    if not prediction or not reference:
        return float(not prediction and not reference)
    common = lcs_length(prediction, reference)
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def word_count(text: str) -> int:
    """Whitespace-separated words, each CJK character counting as one."""
    return sum(1 for _ in _TOKEN.finditer(text))


# --- JSON fields: dotted paths ----------------------------------------------------------------------


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


# --- against a reference ----------------------------------------------------------------------------


class _ReferenceCheck(Check):
    """A check against `row[reference_field]` (default "answer"); a list there holds alternatives."""

    PARAMS: tuple[str, ...] = ()

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.params = _Params(spec, ("reference_field", *self.PARAMS))
        self.reference_field: str = self.params.text("reference_field", "answer")

    def _references(self, row: dict[str, Any]) -> list[Any] | CheckResult:
        value = row.get(self.reference_field) if isinstance(row, dict) else None
        if value is None:
            return _fail(f"row has no {self.reference_field!r} field")
        values = value if isinstance(value, list | tuple) else [value]
        return list(values) or _fail(f"row {self.reference_field!r} is an empty list")


@register("exact_match")
class ExactMatch(_ReferenceCheck):
    """The output equals the row's `reference_field` (default "answer"), surrounding whitespace ignored
    (`strip`), case kept unless `case_sensitive: false`. The `exact_match` reward's comparison."""

    PARAMS = ("strip", "case_sensitive")

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.strip = self.params.boolean("strip", True)
        self.case_sensitive = self.params.boolean("case_sensitive", True)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        references = self._references(row)
        if isinstance(references, CheckResult):
            return references
        for reference in references:
            if rewards.texts_equal(output, str(reference), strip=self.strip, case_sensitive=self.case_sensitive):
                return _pass()
        return _fail(f"expected {' or '.join(_short(str(r)) for r in references[:3])}")


@register("normalized_match")
class NormalizedMatch(_ReferenceCheck):
    """The output equals the reference after `normalize_text`: NFKC, casefold (unless `case_sensitive`),
    punctuation removed (unless `remove_punctuation: false`), whitespace collapsed, articles a/an/the
    dropped if `remove_articles`."""

    PARAMS = ("case_sensitive", "remove_punctuation", "remove_articles")

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.options = {
            "case_sensitive": self.params.boolean("case_sensitive", False),
            "remove_punctuation": self.params.boolean("remove_punctuation", True),
            "remove_articles": self.params.boolean("remove_articles", False),
        }

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        references = self._references(row)
        if isinstance(references, CheckResult):
            return references
        got = normalize_text(output, **self.options)
        expected = [normalize_text(str(reference), **self.options) for reference in references]
        if got in expected:
            return _pass()
        return _fail(f"normalized {_short(' '.join(got))}, expected {_short(' '.join(expected[0]))}")


@register("numeric")
class Numeric(_ReferenceCheck):
    """The last number in the output (`extract_last_number`: "1,234", "-3.5", "1e-3") is close to the
    reference number (a number, or the last number of its text, e.g. GSM8K's "... #### 72"):
    `math.isclose` with `abs_tol` (default 1e-9) and `rel_tol` (default 1e-6), as `numeric_match`."""

    PARAMS = ("abs_tol", "rel_tol")

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.abs_tol = self.params.number("abs_tol", 1e-9, low=0)
        self.rel_tol = self.params.number("rel_tol", 1e-6, low=0)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        references = self._references(row)
        if isinstance(references, CheckResult):
            return references
        reference = rewards.reference_number(references[0])
        if reference is None:
            return _fail(f"row {self.reference_field!r} holds no number: {_short(references[0])}")
        matched, got = rewards.number_matches(output, reference, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        if got is None:
            return _fail(f"no number in the output; expected {reference:g}")
        return _pass(f"{got:g}") if matched else _fail(f"got {got:g}, expected {reference:g}")


@register("contains")
class Contains(_ReferenceCheck):
    """The output contains the `values` (a list or one string), plus the row's reference (a string or a
    list of strings) when `reference_field` is given or `values` is not. `mode`: all (default), any,
    fraction (the share found is the score, passing at 1.0). Substrings, case-insensitive unless
    `case_sensitive`: the `contains` reward's matching."""

    PARAMS = ("values", "mode", "case_sensitive")

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.values: list[str] | None = self.params.texts("values", None)
        self.mode = self.params.choice("mode", ("all", "any", "fraction"), "all")
        self.case_sensitive = self.params.boolean("case_sensitive", False)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        values = list(self.values or [])
        if self.values is None or "reference_field" in self.spec.params:
            references = self._references(row)
            if isinstance(references, CheckResult):
                return references
            values += [str(r) for r in references]
        hits = rewards.keyword_hits(output, values, case_sensitive=self.case_sensitive)
        score = rewards.keyword_score(hits, self.mode)
        missing = [v for v, hit in zip(values, hits, strict=True) if not hit]
        if score >= 1.0:
            return CheckResult(True, 1.0, "")
        return CheckResult(False, score, f"missing {', '.join(_short(v, 40) for v in missing[:5])}")


@register("regex")
class Regex(Check):
    """`pattern` is found in the output (`full: true`: matches the whole output) - or, with
    `must_match: false`, is not. `flags` are letters of "imsxa". The pattern is compiled when the
    suite loads. Only the first `max_chars` (default 100000) characters are searched, which bounds
    the cost of an ordinary pattern on a huge output; a pattern prone to catastrophic backtracking
    (nested quantifiers such as `(a+)+$`) is the suite author's to avoid."""

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(spec, ("pattern", "must_match", "full", "flags", "max_chars"))
        pattern = params.text("pattern", empty=True)
        flags = params.get("flags", "")
        if not isinstance(flags, str):
            raise params.error("flags", f"expected letters of 'imsxa', got {flags!r}")
        try:
            self.pattern = rewards.compile_regex(pattern, flags)
        except ValueError as exc:
            raise params.error("flags" if str(exc).startswith("unknown regex flags") else "pattern", str(exc)) from exc
        self.must_match = params.boolean("must_match", True)
        self.full = params.boolean("full", False)
        self.max_chars = params.integer("max_chars", 100_000, low=1)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        text = output[: self.max_chars]
        note = (
            f" (searched the first {self.max_chars} of {len(output)} characters)"
            if len(output) > self.max_chars
            else ""
        )
        match = (self.pattern.fullmatch if self.full else self.pattern.search)(text)
        if self.must_match:
            if match is None:
                return _fail(f"no match for {_short(self.pattern.pattern)}{note}")
            return _pass(f"matched {_short(match.group())}")
        if match is not None:
            return _fail(f"matched {_short(self.pattern.pattern)}: {_short(match.group())}")
        return _pass(f"no match{note}")


@register("token_f1")
class TokenF1(_ReferenceCheck):
    """SQuAD-style token F1 between the output and the reference (the best of a list), both normalized
    by `normalize_text` with articles removed; score = F1, passing at `threshold` (default 0.5)."""

    PARAMS = ("threshold",)

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.threshold = self.params.number("threshold", 0.5, low=0, high=1)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        references = self._references(row)
        if isinstance(references, CheckResult):
            return references
        got = normalize_text(output, remove_articles=True)
        best = max(token_f1(got, normalize_text(str(r), remove_articles=True)) for r in references)
        return _scored(best, self.threshold, "token F1")


@register("rouge_l")
class RougeL(_ReferenceCheck):
    """ROUGE-L F-measure (LCS of `normalize_text` tokens) between the output and the reference (the best
    of a list); score = F, passing at `threshold` (default 0.5). Only the first `max_tokens` (default
    10000) tokens of each side are compared, which the reason says when it happens."""

    PARAMS = ("threshold", "max_tokens")

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.threshold = self.params.number("threshold", 0.5, low=0, high=1)
        self.max_tokens = self.params.integer("max_tokens", 10_000, low=1)

    def _tokens(self, text: str) -> tuple[list[str], bool]:
        # the token cap bounds the characters normalized too: no token of interest lies past it
        tokens = normalize_text(text[: self.max_tokens * 64])
        return tokens[: self.max_tokens], len(tokens) > self.max_tokens or len(text) > self.max_tokens * 64

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        references = self._references(row)
        if isinstance(references, CheckResult):
            return references
        got, cut = self._tokens(output)
        best = 0.0
        for reference in references:
            tokens, cut_reference = self._tokens(str(reference))
            best, cut = max(best, rouge_l(got, tokens)), cut or cut_reference
        result = _scored(best, self.threshold, "ROUGE-L")
        return replace(result, reason=result.reason + f" (first {self.max_tokens} tokens compared)") if cut else result


_LETTER = r"([A-Z])"
_CHOICE_WHOLE = re.compile(r"\s*[(\[]?([A-Za-z])[)\]]?[.:]?\s*")
_STATED = r"(?:\s+(?i:is|would\s+be|will\s+be))?\s*[:=\-]?\s*(?i:option\s*)?[(\[]?" + _LETTER + r"(?![A-Za-z0-9])"
_CHOICE_ANSWER = re.compile(r"(?i:\banswer)" + _STATED + r"|\\boxed\{\s*(?:\\text\{)?\s*" + _LETTER)
_CHOICE_OPTION = re.compile(r"(?i:\boption|\bchoice)" + _STATED)  # weaker: options are also discussed
_CHOICE_LEADING = re.compile(r"\s*[(\[]?" + _LETTER + r"[)\].:](?:\s|$)")
_CHOICE_BRACKETED = re.compile(r"[(\[]" + _LETTER + r"[)\]]")


@register("multiple_choice")
class MultipleChoice(_ReferenceCheck):
    """The option the output chose equals the row's answer.

    The choice is read from the output in this order: the whole output is a letter ("B", "(b)", "B.");
    the last stated answer ("Answer: B", "the answer is (C)", "\\boxed{D}"), else the last stated
    option ("the correct option is C"); a leading letter ("B. Paris",
    "(B) Paris"); the one bracketed letter used ("... so (B)"; "(A) or (B)" is ambiguous); and,
    with `choices_field`, the one option text the output gives. Letters are A, B, ... up to the number
    of choices (`choices_field`: a list of option texts, or a mapping letter -> text), else `letters`
    (default "ABCDEFGHIJ"). The answer is a letter, a 0-based option index, or an option's text.
    """

    PARAMS = ("choices_field", "letters")

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        self.choices_field: str | None = self.params.text("choices_field", None)
        self.letters: str = self.params.text("letters", "ABCDEFGHIJ")
        if not re.fullmatch(r"[A-Z]+", self.letters) or len(set(self.letters)) != len(self.letters):
            raise self.params.error("letters", f"expected distinct capital letters, got {self.letters!r}")

    def _choices(self, row: dict[str, Any]) -> dict[str, str] | CheckResult:
        if self.choices_field is None:
            return dict.fromkeys(self.letters, "")
        raw = row.get(self.choices_field)
        if isinstance(raw, dict) and raw and all(isinstance(k, str) and re.fullmatch("[A-Za-z]", k) for k in raw):
            return {k.upper(): str(v) for k, v in raw.items()}
        if isinstance(raw, list) and 0 < len(raw) <= 26:
            return {chr(ord("A") + i): str(v) for i, v in enumerate(raw)}
        return _fail(f"row {self.choices_field!r} is not a list of options or a mapping letter -> option")

    @staticmethod
    def _by_text(text: str, choices: dict[str, str]) -> str | None:
        """The letter of the option the text is, else of the one option it contains (as whole words)."""
        words = f" {' '.join(normalize_text(text))} "
        options = {letter: f" {' '.join(normalize_text(option))} " for letter, option in choices.items()}
        options = {letter: option for letter, option in options.items() if option.strip()}
        exact = [letter for letter, option in options.items() if option == words]
        inside = [letter for letter, option in options.items() if option in words]
        return exact[0] if len(exact) == 1 else inside[0] if len(inside) == 1 else None

    def chosen(self, output: str, choices: dict[str, str]) -> str | None:
        """The letter the output chose, or None."""
        text = unicodedata.normalize("NFKC", output).replace("*", "")
        whole = _CHOICE_WHOLE.fullmatch(text) if len(text.strip()) <= 5 else None
        if whole and whole.group(1).upper() in choices:
            return whole.group(1).upper()
        for pattern in (_CHOICE_ANSWER, _CHOICE_OPTION):
            stated = [letter for m in pattern.finditer(text) if (letter := m.group(1) or m.group(2)) in choices]
            if stated:
                return stated[-1]
        bracketed = {m.group(1) for m in _CHOICE_BRACKETED.finditer(text)} & set(choices)
        leading = _CHOICE_LEADING.match(text)
        if leading and leading.group(1) in choices and bracketed <= {leading.group(1)}:
            return leading.group(1)
        if len(bracketed) == 1:
            return bracketed.pop()
        if any(choices.values()):
            return self._by_text(text, choices)
        return None

    def _answer(self, reference: Any, choices: dict[str, str]) -> str | None:
        if isinstance(reference, int) and not isinstance(reference, bool):
            letters = list(choices)
            return letters[reference] if 0 <= reference < len(letters) else None
        text = str(reference).strip()
        bare = re.fullmatch(r"[(\[]?([A-Za-z])[)\]]?\.?", text)
        if bare and bare.group(1).upper() in choices:
            return bare.group(1).upper()
        return self._by_text(text, choices) if any(choices.values()) else None

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        references = self._references(row)
        if isinstance(references, CheckResult):
            return references
        choices = self._choices(row)
        if isinstance(choices, CheckResult):
            return choices
        answer = self._answer(references[0], choices)
        if answer is None:
            return _fail(f"row {self.reference_field!r} is not one of the choices: {_short(references[0])}")
        chosen = self.chosen(output, choices)
        if chosen is None:
            return _fail(f"no choice found in the output; expected {answer}")
        return _pass(f"chose {chosen}") if chosen == answer else _fail(f"chose {chosen}, expected {answer}")


# --- JSON ---------------------------------------------------------------------------------------------


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


# --- business rules -----------------------------------------------------------------------------------

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


_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]{1,64}@[^\W_][\w-]{0,62}(?:\.[\w-]{1,63}){1,8}")
_PHONE = re.compile(
    r"""
    (?<![\w+])(?<!\d[.\-])                                      # not inside a word or a longer number
    (?: (?P<intl> \+\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){1,5} )      # +44 20 7946 0958
      | (?P<paren> \(\d{2,5}\)[ .\-]?\d{2,4}(?:[ .\-]?\d{2,5}){1,3} )            # (555) 123-4567
      | (?P<grouped> \d{2,5}(?P<sep>[ .\-])\d{2,5}(?:(?P=sep)\d{2,5}){0,3} )      # 555-123-4567, 06 12 34 56 78
      | (?P<split> \d{3,5}[ \-]\d{6,8} )                                           # 030 1234567, 07700 900123
      | (?P<bare> 0\d{9,10} )                                                     # 0612345678
    )
    (?!\w)(?![.\-]\d)                                           # nor followed by more digits
    """,
    re.VERBOSE,
)
_CARD = re.compile(  # 13-19 digits: ungrouped, or 4 then groups of 3-6 ("4111 1111 1111 1111", "3782 822463 10005")
    r"(?<!\d)(?<!\d-)(?:[2-6]\d{12,18}|[2-6]\d{3}(?P<sep>[ \-])\d{3,6}(?:(?P=sep)\d{3,6}){1,3})(?!\d)"
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
PII_KINDS = ("email", "phone", "iban", "credit_card")


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card(text: str) -> str | None:
    """The longest leading run of whole digit groups of a `_CARD` match that is a card number (13-19
    digits, Luhn valid): "4111 1111 1111 1111 123" (19 digits failing Luhn) -> its first 16."""
    ends = [m.start() for m in re.finditer(r"[ \-]", text)]
    for end in [len(text), *reversed(ends)]:
        digits = re.sub(r"\D", "", text[:end])
        if 13 <= len(digits) <= 19 and _luhn(digits):
            return text[:end]
    return None


def _phone_valid(match: re.Match[str], text_before: str) -> bool:
    if text_before[-1:] == " " and text_before[-2:-1].isdigit() and " " in match.group():
        return False  # a continuation of space-grouped digits ("4111 1111 1111 1111"), not a number of its own
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if match.group("intl"):
        return 8 <= digits <= 15
    if not 9 <= digits <= 12:
        return False
    if match.group("grouped"):
        groups, separators = re.split(r"[ .\-]", text), set(re.findall(r"[ .\-]", text))
        thousands = len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])  # 1.234.567.890, an IP
        return len(separators) == 1 and not thousands
    return True


def _mask(text: str, keep_end: int, keep_start: int = 0) -> str:
    """Letters and digits replaced by '*' except the first `keep_start` and last `keep_end` of them."""
    total = sum(c.isalnum() for c in text)
    out, seen = [], 0
    for char in text:
        if char.isalnum():
            seen += 1
            out.append(char if seen <= keep_start or seen > total - keep_end else "*")
        else:
            out.append(char)
    return "".join(out)


def _disjoint(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans merged where they overlap, sorted by start."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, masked text) of each email, phone number, IBAN (mod-97 checked) and payment card number
    (13-19 digits starting 2-6, Luhn checked) in `text`, in order of appearance. A phone number has
    8-15 digits after "+", or 9-12 digits in a common local form ("(555) 123-4567", "555-123-4567",
    "06 12 34 56 78", "0612345678"); digits inside a card or an IBAN are not also a phone number."""
    text = unicodedata.normalize("NFKC", text)
    found: list[tuple[int, int, str, str]] = []
    for match in _IBAN.finditer(text):
        if _iban_valid(match.group()):
            found.append((match.start(), match.end(), "iban", _mask(match.group(), 4, 2)))
    for match in _CARD.finditer(text):
        card = _card(match.group())
        if card is not None:
            found.append((match.start(), match.start() + len(card), "credit_card", _mask(card, 4)))
    taken = _disjoint((start, end) for start, end, _, _ in found)
    starts = [start for start, _ in taken]
    for match in _PHONE.finditer(text):
        before = bisect.bisect_left(starts, match.end()) - 1  # the last span starting before the match ends
        overlaps = before >= 0 and taken[before][1] > match.start()
        if not overlaps and _phone_valid(match, text[max(0, match.start() - 2) : match.start()]):
            found.append((match.start(), match.end(), "phone", _mask(match.group(), 2)))
    if "@" in text:
        for match in _EMAIL.finditer(text):
            local, domain = match.group().split("@", 1)
            if re.search(r"[^\W\d_]", domain.rsplit(".", 1)[-1]):  # a top-level domain has letters
                found.append((match.start(), match.end(), "email", f"{local[0]}***@{domain}"))
    return [(kind, masked) for _, _, kind, masked in sorted(found)]


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


# --- LLM judge -----------------------------------------------------------------------------------------

_SCORE = re.compile(r"(?i)\bscore\W{0,6}?(-?\d+(?:\.\d+)?)")
JUDGEMENT_PREFIX = "__judgement__"
_INPUT_FIELDS = ("prompt", "question", "input")  # where the row's input is, unless `input_field` says


@register("llm_judge")
class LLMJudge(Check):
    """A rubric scored by a judge model.

    A check cannot call a model, so judging takes two steps, done by the runner:
    1. `judge_prompt(output, row)` renders the `rubric`, the row's input (`input_field`, else the
       first of "prompt", "question", "input" the row has), its reference (`reference_field`, when
       given and present) and the output (its first `max_output_chars`, default 20000) into one
       prompt asking for "Score: N" first (so a short generation budget still holds it), then a
       one-sentence justification;
    2. the runner sends it to the `judge` model (a model reference, stored here only), puts the reply
       in `row["__judgement__" + spec.name]` and calls `evaluate`, which parses it with
       `score_from_judgement`. Without that key the example fails with reason "no judgement".
    `scale` is the score range ("1-5", [1, 5] or 5 meaning 1-5); `pass_at` is the lowest passing score.
    The result's score is the judge's score mapped onto [0, 1].
    """

    def __init__(self, spec: CheckSpec) -> None:
        super().__init__(spec)
        params = _Params(
            spec, ("rubric", "scale", "pass_at", "judge", "input_field", "reference_field", "max_output_chars")
        )
        self.rubric: str = params.text("rubric")
        self.low, self.high = self._scale(params)
        self.pass_at: float = params.number("pass_at", low=self.low, high=self.high)
        self.judge: str = params.text("judge")
        self.input_field: str | None = params.text("input_field", None)
        self.reference_field: str | None = params.text("reference_field", None)
        self.max_output_chars: int = params.integer("max_output_chars", 20_000, low=1)

    @staticmethod
    def _scale(params: _Params) -> tuple[float, float]:
        raw = params.get("scale", "1-5")
        text = re.fullmatch(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*", raw) if isinstance(raw, str) else None
        if isinstance(raw, int) and not isinstance(raw, bool):
            bounds: Any = [1, raw]
        elif text is not None:
            bounds = [int(text.group(1)), int(text.group(2))]
        else:
            bounds = raw
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
            or bounds[0] >= bounds[1]
        ):
            raise params.error("scale", f'expected "low-high" (e.g. "1-5"), [low, high] or high, got {raw!r}')
        return float(bounds[0]), float(bounds[1])

    @property
    def judgement_key(self) -> str:
        return JUDGEMENT_PREFIX + self.spec.name

    def judge_prompt(self, output: str, row: dict[str, Any]) -> str:
        """The prompt for the judge model: rubric, input, reference (if any), output, answer format."""
        low, high = f"{self.low:g}", f"{self.high:g}"
        parts = [
            "You are grading a model's response against a rubric.",
            f"## Rubric\n{self.rubric.strip()}",
        ]
        inputs = [row.get(f) for f in ([self.input_field] if self.input_field else _INPUT_FIELDS)]
        given = next((value for value in inputs if value is not None), None)
        if given is not None:
            parts.append(f"## Input\n{given}")
        if self.reference_field and row.get(self.reference_field) is not None:
            parts.append(f"## Reference answer\n{row[self.reference_field]}")
        shown = output[: self.max_output_chars]
        if len(output) > self.max_output_chars:
            shown += f"\n[... {len(output) - self.max_output_chars} more characters not shown]"
        parts.append(f"## Response\n{shown}")
        parts.append(
            f'Judge the response only by the rubric. Start your reply with a line "Score: N", where N is a '
            f"whole number from {low} (worst) to {high} (best), then give one sentence of justification."
        )
        return "\n\n".join(parts)

    def score_from_judgement(self, text: str) -> CheckResult:
        """The judge's reply as a result: its first "Score: N" (or a reply that is just a number)."""
        match = _SCORE.search(text)
        raw = match.group(1) if match else text.strip().rstrip(".")
        try:
            score = float(raw)
        except ValueError:
            return _fail(f"unparseable judgement: {_short(text, 200)}")
        if not self.low <= score <= self.high:
            return _fail(f"judge score {score:g} is outside {self.low:g}-{self.high:g}: {_short(text, 200)}")
        passed = score >= self.pass_at
        reason = f"judge score {score:g} of {self.low:g}-{self.high:g} ({'>=' if passed else '<'} {self.pass_at:g})"
        return CheckResult(passed, (score - self.low) / (self.high - self.low), reason)

    def _evaluate(self, output: str, row: dict[str, Any]) -> CheckResult:
        judgement = row.get(self.judgement_key) if isinstance(row, dict) else None
        if not isinstance(judgement, str):
            return _fail("no judgement")
        return self.score_from_judgement(judgement)
