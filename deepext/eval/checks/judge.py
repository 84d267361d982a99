"""The llm_judge check: a rubric scored by a judge model, in two steps the runner drives (render the
judge prompt, then parse the judge's reply into a result)."""

from __future__ import annotations

import re
from typing import Any

from deepext.eval.checks.base import Check, CheckResult, CheckSpec, _fail, _Params, _short, register

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
