"""Checks of an output against the row's reference answer: exact_match, normalized_match, numeric,
contains, token_f1, rouge_l, multiple_choice; and regex, a pattern the output must (not) match.
Where a GRPO reward means the same thing, the comparison is the reward's (`deepext.grpo.rewards`)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from typing import Any

from deepext.eval.checks.base import (
    Check,
    CheckResult,
    CheckSpec,
    _fail,
    _Params,
    _pass,
    _scored,
    _short,
    register,
)
from deepext.eval.checks.text import normalize_text, rouge_l, token_f1
from deepext.grpo import rewards


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
