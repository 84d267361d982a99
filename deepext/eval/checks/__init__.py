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

Modules, one job each: `base` (the `Check` contract, `CheckSpec`/`CheckResult`, the `CHECK_TYPES`
registry, `build_check`), `text` (normalization, token F1, ROUGE-L), `json_fields` (output JSON and
dotted field paths), `reference`, `json_checks`, `rules` (with `pii`, the personal-data scanner) and
`judge` (the check types). Importing this package imports them all, so every type is registered.
"""

# Imported in this order so that CHECK_TYPES lists the types in the order above.
from deepext.eval.checks.base import (
    CHECK_TYPES,
    SEVERITIES,
    Check,
    CheckResult,
    CheckSpec,
    build_check,
    register,
)
from deepext.eval.checks.text import lcs_length, normalize_text, rouge_l, token_f1, word_count

# isort: split
from deepext.eval.checks.reference import (
    Contains,
    ExactMatch,
    MultipleChoice,
    NormalizedMatch,
    Numeric,
    Regex,
    RougeL,
    TokenF1,
)

# isort: split
from deepext.eval.checks.json_checks import JsonKeys, JsonSchema, JsonValid

# isort: split
from deepext.eval.checks.pii import PII_KINDS, find_pii
from deepext.eval.checks.rules import (
    AllowedValues,
    Consistency,
    FieldRange,
    MaxLength,
    MinLength,
    MustMention,
    MustNotMention,
    Pii,
    Rule,
)

# isort: split
from deepext.eval.checks.judge import JUDGEMENT_PREFIX, LLMJudge

__all__ = [
    "CHECK_TYPES",
    "JUDGEMENT_PREFIX",
    "PII_KINDS",
    "SEVERITIES",
    "AllowedValues",
    "Check",
    "CheckResult",
    "CheckSpec",
    "Consistency",
    "Contains",
    "ExactMatch",
    "FieldRange",
    "JsonKeys",
    "JsonSchema",
    "JsonValid",
    "LLMJudge",
    "MaxLength",
    "MinLength",
    "MultipleChoice",
    "MustMention",
    "MustNotMention",
    "NormalizedMatch",
    "Numeric",
    "Pii",
    "Regex",
    "RougeL",
    "Rule",
    "TokenF1",
    "build_check",
    "find_pii",
    "lcs_length",
    "normalize_text",
    "register",
    "rouge_l",
    "token_f1",
    "word_count",
]
