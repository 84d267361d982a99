"""Evaluation checks: every type on hand-made examples with hand-computed results, definitions that
fail at load time, and odd outputs (empty, unicode, malformed or deep JSON, 2 MB) that never raise."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from deepext.errors import InvalidInput
from deepext.eval.checks import (
    CHECK_TYPES,
    CheckResult,
    CheckSpec,
    LLMJudge,
    build_check,
    find_pii,
    lcs_length,
    normalize_text,
    rouge_l,
    token_f1,
)
from deepext.grpo import rewards


def check(type_: str, severity: str = "error", message: str = "", **params: Any) -> Any:
    return build_check(CheckSpec(name="c", type=type_, params=params, severity=severity, message=message))


def run(type_: str, output: str, row: dict[str, Any] | None = None, **params: Any) -> CheckResult:
    return check(type_, **params).evaluate(output, row if row is not None else {})


def rule(output: str, row: dict[str, Any] | None = None, **params: Any) -> CheckResult:
    return run("rule", output, row, **params)


# --- definitions ------------------------------------------------------------------------------------------


def test_every_type_is_registered() -> None:
    assert set(CHECK_TYPES) == {
        "exact_match",
        "normalized_match",
        "numeric",
        "contains",
        "regex",
        "token_f1",
        "rouge_l",
        "multiple_choice",
        "json_valid",
        "json_schema",
        "json_keys",
        "rule",
        "llm_judge",
    }


@pytest.mark.parametrize(
    ("type_", "params", "field", "message"),
    [
        ("nope", {}, "type", "unknown type 'nope'"),
        ("exact_match", {"referenc_field": "a"}, "params.referenc_field", "unknown param"),
        ("exact_match", {"reference_field": 3}, "params.reference_field", "string"),
        ("regex", {}, "params.pattern", "required"),
        ("regex", {"pattern": "("}, "params.pattern", "bad regex"),
        ("regex", {"pattern": "a", "flags": "q"}, "params.flags", "unknown regex flags"),
        ("regex", {"pattern": "a", "must_match": "no"}, "params.must_match", "true or false"),
        ("numeric", {"abs_tol": -1}, "params.abs_tol", "number in"),
        ("contains", {"mode": "most"}, "params.mode", "all, any, fraction"),
        ("contains", {"values": []}, "params.values", "non-empty list"),
        ("token_f1", {"threshold": 1.5}, "params.threshold", "[0, 1]"),
        ("rouge_l", {"max_tokens": 0}, "params.max_tokens", "integer >= 1"),
        ("multiple_choice", {"letters": "abc"}, "params.letters", "capital letters"),
        ("json_schema", {"schema": {"type": "nope"}}, "params.schema", "invalid JSON Schema"),
        ("json_schema", {"schema": "{not json"}, "params.schema", "Expecting property name"),
        ("json_schema", {"schema": {}, "schema_field": "s"}, "params.schema_field", "not both"),
        ("json_keys", {"required": {}}, "params.required", "mapping"),
        ("json_keys", {"required": {"a": "str"}}, "params.required.a", "string, number, integer"),
        ("rule", {}, "params.rule", "field_range, allowed_values"),
        ("rule", {"rule": ["pii"]}, "params.rule", "expected one of"),
        ("rule", {"rule": "field_range", "field": "a"}, "params.min", "min, max or both"),
        ("rule", {"rule": "field_range", "field": "a", "min": 2, "max": 1}, "params.max", "below min"),
        ("rule", {"rule": "field_range", "min": 2}, "params.field", "required"),
        ("rule", {"rule": "allowed_values", "field": "a", "values": "x"}, "params.values", "non-empty list"),
        ("rule", {"rule": "must_mention"}, "params.terms", "required"),
        ("rule", {"rule": "must_mention", "terms": ["a"], "mode": "some"}, "params.mode", "all, any"),
        ("rule", {"rule": "max_length"}, "params.chars", "chars or words"),
        ("rule", {"rule": "max_length", "chars": 3, "words": 3}, "params.chars", "chars or words"),
        ("rule", {"rule": "min_length", "words": -1}, "params.words", "integer >= 0"),
        ("rule", {"rule": "pii", "kinds": ["ssn"]}, "params.kinds", "unknown ssn"),
        ("rule", {"rule": "pii", "chars": 3}, "params.chars", "unknown param"),
        ("rule", {"rule": "consistency", "field": "a", "row_field": "b", "op": "gt"}, "params.op", "eq, ne"),
        ("llm_judge", {"pass_at": 3, "judge": "j"}, "params.rubric", "required"),
        ("llm_judge", {"rubric": "r", "judge": "j"}, "params.pass_at", "required"),
        ("llm_judge", {"rubric": "r", "pass_at": 6, "judge": "j"}, "params.pass_at", "[1.0, 5.0]"),
        ("llm_judge", {"rubric": "r", "pass_at": 3, "scale": "5-1", "judge": "j"}, "params.scale", "low-high"),
        ("llm_judge", {"rubric": "  ", "pass_at": 3, "judge": "j"}, "params.rubric", "non-empty"),
        ("llm_judge", {"rubric": "r", "pass_at": 3}, "params.judge", "required"),
    ],
)
def test_a_wrong_definition_fails_when_built(type_: str, params: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[")) as err:
        check(type_, **params)
    assert err.value.field == field
    assert str(err.value).startswith("check 'c': ")


def test_wrong_severity_weight_and_params_fail_when_built() -> None:
    for spec, field in [
        (CheckSpec("c", "exact_match", severity="fatal"), "severity"),
        (CheckSpec("c", "exact_match", weight=-1), "weight"),
        (CheckSpec("c", "exact_match", weight=float("nan")), "weight"),
        (CheckSpec("c", "exact_match", params=["answer"]), "params"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(InvalidInput) as err:
            build_check(spec)
        assert err.value.field == field


def test_message_leads_the_reason_of_a_failure_and_severity_stays_on_the_spec() -> None:
    built = check(
        "rule", severity="critical", message="Refunds are capped at 500", rule="field_range", field="refund", max=500
    )
    assert built.spec.severity == "critical"
    assert built.evaluate('{"refund": 900}', {}) == CheckResult(
        False, 0.0, "Refunds are capped at 500: $.refund = 900 is above 500", "$.refund"
    )
    assert built.evaluate('{"refund": 100}', {}).reason == "$.refund = 100"  # a pass keeps its own reason


def test_an_exception_inside_a_check_is_that_examples_failure() -> None:
    class Broken(LLMJudge):
        def score_from_judgement(self, text: str) -> CheckResult:
            raise KeyError("boom")

    broken = Broken(CheckSpec("c", "llm_judge", params={"rubric": "r", "pass_at": 3, "judge": "j"}))
    assert broken.evaluate("x", {"__judgement__c": "Score: 3"}) == CheckResult(
        False, 0.0, "check error: KeyError: 'boom'"
    )


# --- against a reference --------------------------------------------------------------------------------


def test_exact_match() -> None:
    assert run("exact_match", "  Paris\n", {"answer": "Paris"}).passed
    assert run("exact_match", "paris", {"answer": "Paris"}) == CheckResult(False, 0.0, "expected 'Paris'")
    assert run("exact_match", "paris", {"answer": "Paris"}, case_sensitive=False).passed
    assert run("exact_match", "42", {"answer": 42}).passed
    assert run("exact_match", "NYC", {"answer": ["New York", "NYC"]}).passed  # a list holds alternatives
    assert run("exact_match", "x", {"label": "x"}, reference_field="label").passed
    assert run("exact_match", "Paris", {"question": "?"}) == CheckResult(False, 0.0, "row has no 'answer' field")
    assert run("exact_match", "Paris", {"answer": None}).reason == "row has no 'answer' field"


def test_normalized_match() -> None:
    row = {"answer": "The Eiffel Tower"}
    assert run("normalized_match", "  the   EIFFEL tower!! ", row).passed
    assert not run("normalized_match", "Eiffel Tower", row).passed
    assert run("normalized_match", "Eiffel Tower", row, remove_articles=True).passed
    assert not run("normalized_match", "the eiffel tower", row, case_sensitive=True).passed
    assert not run("normalized_match", "The Eiffel Tower.", row, remove_punctuation=False).passed
    assert run("normalized_match", "ＰＡＲＩＳ", {"answer": "paris"}).passed  # NFKC: full-width letters
    assert run("normalized_match", "Cafe\u0301", {"answer": "café"}).passed  # NFKC: combining accent
    assert run("normalized_match", "「東京」。", {"answer": "東京"}).passed  # CJK punctuation
    failed = run("normalized_match", "Lyon", row)
    assert failed.reason == "normalized 'lyon', expected 'the eiffel tower'"


def test_normalize_text() -> None:
    assert normalize_text("The cat's HAT, (a) big-one!") == ["the", "cats", "hat", "a", "bigone"]
    assert normalize_text("The cat's HAT, (a) big-one!", remove_articles=True) == ["cats", "hat", "bigone"]
    assert normalize_text("北京大学 is in 北京") == ["北", "京", "大", "学", "is", "in", "北", "京"]
    assert normalize_text("straße") == ["strasse"]  # casefold, not lower
    assert normalize_text("") == [] and normalize_text(" \t\n") == []


def test_numeric() -> None:
    assert run("numeric", "2 + 2 = 4, so the total is 1,234.", {"answer": "1234"}) == CheckResult(True, 1.0, "1234")
    assert run("numeric", "#### 72", {"answer": "Natalia sold ... #### 72"}).passed
    assert run("numeric", "I get 41", {"answer": 42}) == CheckResult(False, 0.0, "got 41, expected 42")
    assert run("numeric", "100.4", {"answer": 100}, rel_tol=0.01).passed
    assert run("numeric", "100.4", {"answer": 100}, abs_tol=0.5).passed
    assert not run("numeric", "100.4", {"answer": 100}).passed
    assert run("numeric", "no idea", {"answer": 5}).reason == "no number in the output; expected 5"
    assert run("numeric", "5", {"answer": "n/a"}).reason == "row 'answer' holds no number: 'n/a'"


def test_contains() -> None:
    text = "The Eiffel Tower is in Paris, France."
    assert run("contains", text, {"answer": "paris"}).passed
    assert run("contains", text, {"answer": ["Paris", "Berlin"]}) == CheckResult(False, 0.0, "missing 'Berlin'")
    assert run("contains", text, {"answer": ["Paris", "Berlin"]}, mode="any").passed
    assert run("contains", text, values=["paris", "tower", "rome"], mode="fraction") == CheckResult(
        False, pytest.approx(2 / 3), "missing 'rome'"
    )
    assert not run("contains", text, values="paris", case_sensitive=True).passed
    assert not run("contains", text, {"answer": "Rome"}, values="paris", reference_field="answer").passed
    assert run("contains", text, {}, values="paris").passed  # values alone need no reference
    assert run("contains", text, {}).reason == "row has no 'answer' field"


def test_regex() -> None:
    assert run("regex", "<think>hm</think> 42", pattern=r"<think>.*</think>") == CheckResult(
        True, 1.0, "matched '<think>hm</think>'"
    )
    assert not run("regex", "<THINK>x</THINK>", pattern=r"<think>.*</think>").passed
    assert run("regex", "<THINK>x</THINK>", pattern=r"<think>.*</think>", flags="i").passed
    assert not run("regex", "Answer: 42!", pattern=r"Answer: \d+", full=True).passed
    assert run("regex", "As an AI model", pattern=r"as an ai", flags="i", must_match=False) == CheckResult(
        False, 0.0, "matched 'as an ai': 'As an AI'"
    )
    assert run("regex", "Fine.", pattern="as an ai", must_match=False).passed
    capped = run("regex", "x" * 50 + "END", pattern="END", max_chars=50)
    assert capped == CheckResult(False, 0.0, "no match for 'END' (searched the first 50 of 53 characters)")


def test_token_f1_by_hand() -> None:
    # normalized: [cat, sat, on, mat] vs [cat, sat] -> overlap 2, P = 2/4, R = 2/2, F1 = 2 * .5 * 1 / 1.5 = 2/3
    result = run("token_f1", "The cat sat on the mat.", {"answer": "a cat sat"})
    assert result == CheckResult(True, pytest.approx(2 / 3), "token F1 0.667 >= 0.5")
    assert not run("token_f1", "The cat sat on the mat.", {"answer": "a cat sat"}, threshold=0.7).passed
    # the best of several references: "mat" alone -> P = 1/4, R = 1, F1 = 0.4; "on the mat" -> 2/4, 1 -> 2/3
    assert run("token_f1", "cat sat on mat", {"answer": ["mat", "on the mat"]}).score == pytest.approx(2 / 3)
    assert token_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 3)  # multiset overlap {a, b}
    assert token_f1([], []) == 1.0 and token_f1([], ["a"]) == 0.0 and token_f1(["a"], ["b"]) == 0.0
    # CJK characters are tokens: [北, 京, 大, 学] vs [北, 京] -> P = 1/2, R = 1 -> 2/3
    assert run("token_f1", "北京大学", {"answer": "北京"}).score == pytest.approx(2 / 3)


def test_rouge_l_by_hand() -> None:
    # [the cat sat on the mat] vs [the cat lay on the mat]: LCS "the cat on the mat" = 5, P = R = 5/6
    result = run("rouge_l", "The cat sat on the mat", {"answer": "the cat lay on the mat"})
    assert result == CheckResult(True, pytest.approx(5 / 6), "ROUGE-L 0.833 >= 0.5")
    # [a b c d e] vs [a x c y]: LCS "a c" = 2, P = 2/5, R = 2/4, F = 2 * .4 * .5 / .9 = 4/9
    assert rouge_l(list("abcde"), list("axcy")) == pytest.approx(4 / 9)
    assert rouge_l([], []) == 1.0 and rouge_l(["a"], []) == 0.0
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook pair (CLRS)


def test_lcs_length_agrees_with_dynamic_programming() -> None:
    def by_table(a: list[str], b: list[str]) -> int:
        previous = [0] * (len(b) + 1)
        for x in a:
            current = [0]
            for j, y in enumerate(b):
                current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
            previous = current
        return previous[-1]

    rng = random.Random(7)
    for _ in range(500):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 15))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 15))]
        assert lcs_length(a, b) == by_table(a, b), (a, b)


def test_rouge_l_compares_only_the_first_max_tokens() -> None:
    result = run("rouge_l", "a b c d", {"answer": "a b"}, max_tokens=2)
    assert result == CheckResult(True, 1.0, "ROUGE-L 1.000 >= 0.5 (first 2 tokens compared)")


CHOICES = ["Lyon", "Paris", "Nice", "Lille"]


@pytest.mark.parametrize(
    ("output", "chosen"),
    [
        ("B", "B"),
        ("(b)", "B"),
        (" B. ", "B"),
        ("Answer: B", "B"),
        ("The correct answer is (C).", "C"),
        ("**Answer:** D", "D"),
        ("Let me think. A is wrong, C too.\nFinal answer: B", "B"),
        ("B. Paris", "B"),
        ("(A) Lyon", "A"),
        ("I am fairly sure it is (D).", "D"),
        ("$\\boxed{C}$", "C"),
        ("The answer is B. Option A is wrong because...", "B"),  # an answer outranks a discussed option
        ("The correct choice is D", "D"),
        ("Ｂ", "B"),  # full-width
        ("Paris", "B"),  # the option's text
        ("It must be paris.", "B"),
        ("The answer is a city", None),  # an article, not a choice
        ("(A) or (B)", None),
        ("Lyon or Paris", None),
        ("Answer: E", None),  # not one of the four
        ("", None),
    ],
)
def test_multiple_choice_reads_the_chosen_option(output: str, chosen: str | None) -> None:
    row = {"answer": "B", "choices": CHOICES}
    result = run("multiple_choice", output, row, choices_field="choices")
    if chosen is None:
        assert result == CheckResult(False, 0.0, "no choice found in the output; expected B")
    else:
        assert result.passed == (chosen == "B")
        assert result.reason == ("chose B" if chosen == "B" else f"chose {chosen}, expected B")


def test_multiple_choice_answer_forms() -> None:
    assert run("multiple_choice", "B", {"answer": 1, "choices": CHOICES}, choices_field="choices").passed  # 0-based
    assert run("multiple_choice", "B", {"answer": "Paris", "choices": CHOICES}, choices_field="choices").passed
    assert run("multiple_choice", "(C)", {"answer": "(c)"}).passed  # letters A-J without choices
    as_mapping = {"answer": "y", "choices": {"X": "red", "Y": "blue"}}
    assert run("multiple_choice", "blue", as_mapping, choices_field="choices").passed
    assert run("multiple_choice", "B", {"answer": "Z"}).reason == "row 'answer' is not one of the choices: 'Z'"
    assert run("multiple_choice", "B", {"answer": "B"}, choices_field="opts").reason.startswith("row 'opts' is not")


# --- JSON ---------------------------------------------------------------------------------------------------


def test_json_valid() -> None:
    assert run("json_valid", '{"a": 1}') == CheckResult(True, 1.0, "object")
    assert run("json_valid", 'Sure!\n```json\n{"a": 1}\n```').passed
    assert run("json_valid", 'The tags are ["x", "y"].') == CheckResult(True, 1.0, "array")  # an array in prose
    assert not run("json_valid", 'Sure!\n```json\n{"a": 1}\n```', allow_fenced=False).passed
    broken = run("json_valid", '{"a": 1,')
    assert broken == CheckResult(
        False, 0.0, "not JSON: no JSON value, ```json block, {...} object or [...] array found"
    )
    assert run("json_valid", "[" * 5000 + "]" * 5000).reason == "not JSON: JSON nested too deeply"


def test_extract_json_prefers_the_array_that_holds_the_object() -> None:
    assert rewards.extract_json('Here: [{"a": 1}, {"a": 2}] ok') == [{"a": 1}, {"a": 2}]
    assert rewards.extract_json('Step [1]: {"a": 1}') == {"a": 1}  # a citation before the object
    assert rewards.extract_json('{"a": 1} then [2]') == {"a": 1}


ORDER = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "integer"},
        "items": {
            "type": "array",
            "items": {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}},
        },
    },
}


def test_json_schema_reports_the_failing_path() -> None:
    output = '{"id": 7, "items": [{"price": 1}, {"price": 2.5}, {"price": "12"}]}'
    assert run("json_schema", output, schema=ORDER) == CheckResult(
        False, 0.0, "$.items[2].price: '12' is not of type 'number'", "$.items[2].price"
    )
    assert run("json_schema", '{"id": 7}', schema=ORDER) == CheckResult(
        False, 0.0, "$: 'items' is a required property", "$"
    )
    assert run("json_schema", '{"id": 7, "items": []}', schema=json.dumps(ORDER)) == CheckResult(True, 1.0)
    quoted = run("json_schema", '{"a b": 1}', schema={"properties": {"a b": {"type": "string"}}})
    assert quoted.path == '$["a b"]'
    assert run("json_schema", "no json here", schema=ORDER).reason.startswith("not JSON: ")


def test_json_schema_from_the_row() -> None:
    assert run("json_schema", "[1, 2]", {"schema": {"type": "array"}}).passed
    assert run("json_schema", "[1, 2]", {"s": {"type": "object"}}, schema_field="s").path == "$"
    assert run("json_schema", "[]", {}).reason == "row has no 'schema' field"
    assert run("json_schema", "[]", {"schema": {"type": 5}}).reason.startswith("row 'schema' is not a JSON Schema")


def test_json_schema_check_and_reward_agree() -> None:
    outputs = [
        '{"id": 1, "items": [{"price": 3}]}',
        '```json\n{"id": 1, "items": []}\n```',
        'Result: {"id": 1, "items": [{"price": 3}]} done',
        '{"id": "1", "items": []}',
        '{"id": 1, "items": [{"cost": 3}]}',
        '{"id": 1, "items": [{"price": 3}]',
        "[]",
        "",
        "   ",
        "🙂",
        "[" * 3000 + "]" * 3000,
    ]
    built = check("json_schema", schema=ORDER)
    from_check = [built.evaluate(o, {}).score for o in outputs]
    from_reward = rewards.json_schema([""] * len(outputs), outputs, [{}] * len(outputs), schema=ORDER)
    assert from_check == from_reward == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_json_schema_on_json_too_deep_to_validate() -> None:
    nested = {"$ref": "#/$defs/n", "$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}
    deep = "[" * 600 + "]" * 600  # parses, but validating it recurses past Python's limit
    assert run("json_schema", "[[[]]]", schema=nested).passed
    assert run("json_schema", deep, schema=nested) == CheckResult(
        False, 0.0, "$: JSON nested too deeply to validate", "$"
    )
    assert rewards.json_schema([""], [deep], [{}], schema=nested) == [0.0]


def test_json_keys() -> None:
    required = {"name": "string", "age": "integer", "address.city": "string", "tags": ["array", "null"]}
    good = '{"name": "Ada", "age": 36.0, "address": {"city": "London"}, "tags": null}'
    assert run("json_keys", good, required=required).passed  # 36.0 is an integer, as in JSON Schema
    assert run("json_keys", '{"name": "Ada", "age": 36}', required=required) == CheckResult(
        False, 0.0, "$.address is missing", "$.address"
    )
    assert run("json_keys", '{"name": "Ada", "age": 36, "address": {"city": 5}}', required=required) == CheckResult(
        False, 0.0, "$.address.city is number, expected string", "$.address.city"
    )
    assert run("json_keys", '{"name": "Ada", "age": true}', required=required).reason == (
        "$.age is boolean, expected integer"
    )
    assert run("json_keys", '{"items": [{"price": 1}]}', required={"items.0.price": "number"}).passed
    assert run("json_keys", '{"items": []}', required={"items[0].price": "number"}).path == "$.items[0]"
    assert run("json_keys", "[1]", required=required) == CheckResult(
        False, 0.0, "expected a JSON object, got array", "$"
    )


# --- business rules ---------------------------------------------------------------------------------------


def test_field_range() -> None:
    params = {"rule": "field_range", "field": "order.total", "min": 0, "max": 100}
    assert rule('{"order": {"total": 99.5}}', **params).passed
    assert rule('{"order": {"total": "12"}}', **params).passed  # numeric text counts
    assert rule('{"order": {"total": -1}}', **params) == CheckResult(
        False, 0.0, "$.order.total = -1 is below 0", "$.order.total"
    )
    assert rule('{"order": {}}', **params) == CheckResult(False, 0.0, "$.order.total is missing", "$.order.total")
    assert rule('{"order": {"total": "lots"}}', **params).reason == "$.order.total is 'lots', not a number"
    assert rule('{"order": {"total": true}}', **params).reason == "$.order.total is True, not a number"
    assert rule("total: 5", **params).reason.startswith("not JSON: ")


def test_allowed_values() -> None:
    params = {"rule": "allowed_values", "field": "status", "values": ["approved", "rejected", 3]}
    assert rule('{"status": "approved"}', **params).passed
    assert rule('{"status": 3.0}', **params).passed
    assert rule('{"status": "Approved"}', **params) == CheckResult(
        False, 0.0, "$.status = 'Approved' is not one of ['approved', 'rejected', 3]", "$.status"
    )
    assert rule('{"status": "Approved"}', **params, case_sensitive=False).passed


def test_must_mention_and_must_not_mention() -> None:
    params = {"rule": "must_mention", "terms": ["Paris", "C++"]}
    assert rule("I code C++ in PARIS.", **params) == CheckResult(True, 1.0, "mentions Paris, C++")
    assert rule("A Parisian codes C.", **params) == CheckResult(False, 0.0, "does not mention 'Paris', 'C++'")
    assert rule("A Parisian codes C++.", **params, mode="any").passed
    assert rule("我爱北京天安门", rule="must_mention", terms=["北京"]).passed  # no word boundaries in CJK
    assert rule("Das ist STRASSE 5", rule="must_mention", terms=["Straße"]).passed  # casefold
    assert rule("café", rule="must_mention", terms=["cafe\u0301"]).passed  # NFKC on both sides
    assert not rule("cafe\u0301", rule="must_mention", terms=["cafe"]).passed  # the accent is part of the word
    assert rule("مرحبا بالعالم", rule="must_mention", terms=["بالعالم"]).passed  # RTL
    banned = {"rule": "must_not_mention", "terms": ["guarantee", "risk-free"]}
    assert rule("We GUARANTEE returns", **banned) == CheckResult(False, 0.0, "mentions 'guarantee'")
    assert rule("No guarantees, not risk-freeish", **banned).passed


def test_length_limits() -> None:
    assert rule("one two three", rule="max_length", words=3) == CheckResult(True, 1.0, "3 words")
    assert rule("one two three four", rule="max_length", words=3) == CheckResult(False, 0.0, "4 words > max 3")
    assert rule("北京大学", rule="max_length", words=3).reason == "4 words > max 3"  # a CJK character is a word
    assert rule("😀😀", rule="max_length", chars=2).passed  # code points
    assert rule("abc", rule="min_length", chars=5) == CheckResult(False, 0.0, "3 chars < min 5")
    assert rule("", rule="min_length", words=1).reason == "0 words < min 1"


def test_find_pii() -> None:
    text = (
        "Mail john.doe@example.co.uk, call +44 20 7946 0958 or (555) 123-4567 or 06 12 34 56 78. "
        "Card 4111-1111-1111-1111, IBAN DE89 3704 0044 0532 0130 00."
    )
    assert find_pii(text) == [
        ("email", "j***@example.co.uk"),
        ("phone", "+** ** **** **58"),
        ("phone", "(***) ***-**67"),
        ("phone", "** ** ** ** 78"),
        ("credit_card", "****-****-****-1111"),
        ("iban", "DE** **** **** **** **30 00"),
    ]
    assert find_pii("Call 555.123.4567 or 0612345678, or 030 1234567") == [
        ("phone", "***.***.**67"),
        ("phone", "********78"),
        ("phone", "*** *****67"),
    ]
    assert find_pii("card 4111 1111 1111 1111 12/25") == [("credit_card", "**** **** **** 1111")]  # expiry after
    assert find_pii("Amex 3782 822463 10005") == [("credit_card", "**** ****** *0005")]
    assert find_pii("555-123-4567 555-987-6543 4111111111111111") == [
        ("phone", "***-***-**67"),
        ("phone", "***-***-**43"),
        ("credit_card", "************1111"),
    ]
    assert find_pii("IBAN GB82WEST12345698765432, card 378282246310005") == [
        ("iban", "GB****************5432"),
        ("credit_card", "***********0005"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "On 2024-01-15 10:30 the server 192.168.100.200 served 1.234.567.890 requests",
        "Order 4111111111111112 (not a Luhn number), IBAN DE00 3704 0044 0532 0130 00 (bad checksum)",
        "version 1.2.3, pages 10-20, score 3/4, year 1999",
        "user@localhost and @handle",
        "4111 1111 1111 1112 and 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4",  # not Luhn; single digits are no card
    ],
)
def test_find_pii_ignores_look_alikes(text: str) -> None:
    assert find_pii(text) == []


def test_pii_rule() -> None:
    assert rule("Nothing personal here.", rule="pii").passed
    failed = rule("Reach me at ann@corp.com or +1 415 555 2671", rule="pii", message="No personal data")
    assert failed == CheckResult(False, 0.0, "No personal data: found email a***@corp.com, phone +* *** *** **71")
    assert rule("Reach me at ann@corp.com", rule="pii", kinds=["phone", "credit_card"]).passed
    many = " ".join(f"u{i}@x.org" for i in range(7))
    assert rule(many, rule="pii", kinds="email").reason.endswith("email u***@x.org (+2 more)")


def test_consistency() -> None:
    row = {"customer": {"id": "C-17"}, "cities": ["Paris", "Lyon"], "text": "Ship to Paris by Friday"}
    base = {"rule": "consistency", "field": "customer_id", "row_field": "customer.id"}
    assert rule('{"customer_id": "C-17"}', row, **base).passed
    assert rule('{"customer_id": "C-18"}', row, **base) == CheckResult(
        False, 0.0, "$.customer_id = 'C-18' does not equal row customer.id = 'C-17'", "$.customer_id"
    )
    assert rule('{"customer_id": "C-18"}', row, **base, op="ne").passed
    assert rule('{"city": "Lyon"}', row, rule="consistency", field="city", row_field="cities", op="in").passed
    assert not rule('{"city": "Nice"}', row, rule="consistency", field="city", row_field="cities", op="in").passed
    assert rule('{"city": "paris"}', row, rule="consistency", field="city", row_field="text", op="in").passed is False
    assert rule(
        '{"city": "paris"}', row, rule="consistency", field="city", row_field="text", op="in", case_sensitive=False
    ).passed
    contains = {"rule": "consistency", "field": "summary", "row_field": "customer.id", "op": "contains"}
    assert rule('{"summary": "Order for C-17"}', row, **contains).passed
    assert rule('{"summary": "x"}', {}, **contains).reason == "row has no 'customer.id' field"


# --- LLM judge -------------------------------------------------------------------------------------------------


def judge(**params: Any) -> Any:
    defaults = {"rubric": "Is it helpful?", "pass_at": 4, "judge": "acme/judge@1"}
    return build_check(CheckSpec("helpful", "llm_judge", params={**defaults, **params}))


def test_judge_prompt() -> None:
    prompt = judge(reference_field="answer").judge_prompt("Paris.", {"prompt": "Capital of France?", "answer": "Paris"})
    assert "## Rubric\nIs it helpful?" in prompt
    assert "## Input\nCapital of France?" in prompt
    assert "## Reference answer\nParis" in prompt
    assert "## Response\nParis." in prompt
    assert prompt.endswith(
        'Start your reply with a line "Score: N", where N is a whole number from 1 (worst) to 5 (best), '
        "then give one sentence of justification."
    )
    assert "## Input" not in judge().judge_prompt("x", {})
    long = judge(max_output_chars=10).judge_prompt("y" * 25, {})
    assert "## Response\nyyyyyyyyyy\n[... 15 more characters not shown]" in long
    assert "from 0 (worst) to 10 (best)" in judge(scale=[0, 10]).judge_prompt("x", {})


@pytest.mark.parametrize(
    ("judgement", "expected"),
    [
        (
            "Score: 4\nHelpful and correct; a higher score needs sources.",
            CheckResult(True, 0.75, "judge score 4 of 1-5 (>= 4)"),
        ),
        ("The response is helpful.\nScore: 4", CheckResult(True, 0.75, "judge score 4 of 1-5 (>= 4)")),
        ("**Score:** 5/5", CheckResult(True, 1.0, "judge score 5 of 1-5 (>= 4)")),
        ("score = 2", CheckResult(False, 0.25, "judge score 2 of 1-5 (< 4)")),
        ("Score: 3\nScore: 5 would need more detail.", CheckResult(False, 0.5, "judge score 3 of 1-5 (< 4)")),
        ("3", CheckResult(False, 0.5, "judge score 3 of 1-5 (< 4)")),
        ("I cannot grade this.", CheckResult(False, 0.0, "unparseable judgement: 'I cannot grade this.'")),
        ("Score: 9", CheckResult(False, 0.0, "judge score 9 is outside 1-5: 'Score: 9'")),
    ],
)
def test_score_from_judgement(judgement: str, expected: CheckResult) -> None:
    assert judge().score_from_judgement(judgement) == expected


def test_judge_evaluate_reads_the_judgement_the_runner_stored() -> None:
    built = judge(judge="models/qwen-judge@3", scale="0-10", pass_at=7)
    assert built.judge == "models/qwen-judge@3"
    assert built.evaluate("answer", {}) == CheckResult(False, 0.0, "no judgement")
    assert built.evaluate("answer", {"__judgement__helpful": "Score: 8"}) == CheckResult(
        True, 0.8, "judge score 8 of 0-10 (>= 7)"
    )


# --- odd outputs: every type gives a result, never an exception, in reasonable time -----------------------

EVERY_TYPE: list[tuple[str, dict[str, Any]]] = [
    ("exact_match", {}),
    ("normalized_match", {"remove_articles": True}),
    ("numeric", {}),
    ("contains", {}),
    ("regex", {"pattern": r"\d+"}),
    ("regex", {"pattern": "secret", "must_match": False}),
    ("token_f1", {}),
    ("rouge_l", {}),
    ("multiple_choice", {"choices_field": "choices"}),
    ("json_valid", {}),
    ("json_schema", {"schema": ORDER}),
    ("json_keys", {"required": {"id": "integer"}}),
    ("rule", {"rule": "field_range", "field": "id", "min": 0}),
    ("rule", {"rule": "allowed_values", "field": "id", "values": [1]}),
    ("rule", {"rule": "must_mention", "terms": ["Paris"]}),
    ("rule", {"rule": "must_not_mention", "terms": ["Paris"]}),
    ("rule", {"rule": "max_length", "words": 10}),
    ("rule", {"rule": "min_length", "chars": 10}),
    ("rule", {"rule": "pii"}),
    ("rule", {"rule": "consistency", "field": "id", "row_field": "answer"}),
    ("llm_judge", {"rubric": "Is it right?", "pass_at": 4, "judge": "acme/judge@1"}),
]
ODD_OUTPUTS = {
    "empty": "",
    "whitespace": " \n\t  ",
    "emoji": "😀👍🏽 👨‍👩‍👧 🇫🇷",
    "cjk": "巴黎是法国的首都。答案：B",
    "combining": "Pa\u0301ri\u0308s e\u0301te\u0301 n\u0303",
    "rtl": "\u202eالجواب هو باريس\u202c שלום",
    "malformed_json": '{"id": 1, "items": [{"price": ',
    "deep_json": "[" * 100_000 + "]" * 100_000,
    "deep_parsing_json": '{"a":' * 400 + "1" + "}" * 400,
    "huge_words": "Paris 12 " * 230_000,  # ~2 MB
    "huge_brackets": "[" * 2_000_000,
    "huge_almost_json": '{"id":' * 350_000,
}


@pytest.mark.parametrize(("type_", "params"), EVERY_TYPE, ids=[p.get("rule", t) for t, p in EVERY_TYPE])
def test_odd_outputs_give_a_clear_result(type_: str, params: dict[str, Any]) -> None:
    built = check(type_, **params)
    row = {"answer": "Paris", "choices": ["Lyon", "Paris"], "prompt": "Capital of France?"}
    for name, output in ODD_OUTPUTS.items():
        start = time.perf_counter()
        result = built.evaluate(output, row)
        elapsed = time.perf_counter() - start
        assert isinstance(result, CheckResult), name
        assert 0.0 <= result.score <= 1.0, name
        assert isinstance(result.reason, str) and len(result.reason) < 1000, name
        assert not result.reason.startswith("check error"), (name, result.reason)
        assert elapsed < 5, (name, elapsed)  # generous: the machines running tests are shared
