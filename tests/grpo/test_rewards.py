"""Reward functions: every built-in, user functions by ref, RewardSet weighting and its errors."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest

from deepext.errors import InvalidInput
from deepext.grpo import rewards as rw
from deepext.grpo.rewards import (
    RewardError,
    RewardSet,
    RewardSpec,
    extract_json,
    extract_last_number,
    get_reward,
    register_reward,
    reward_names,
)

BUILTINS = [
    "contains",
    "exact_match",
    "json_field_match",
    "json_schema",
    "length_penalty",
    "numeric_match",
    "regex",
    "valid_json",
]


def run(name: str, completions: list[str], rows: list[dict[str, Any]] | None = None, **params: Any) -> list[float]:
    """Score through RewardSet, as training does, and return the raw values."""
    rows = rows if rows is not None else [{} for _ in completions]
    _, by_metric = RewardSet([RewardSpec(name, params=params)]).score([""] * len(completions), completions, rows)
    return by_metric[name]


def write_module(folder: Path, name: str, source: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


# --- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is -3.", -3.0),
        ("so 3.5", 3.5),
        ("total: 1,234 apples", 1234.0),
        ("$1,234,567.25", 1234567.25),
        ("tiny: 1e-3", 0.001),
        ("big: -2.5E+4", -25000.0),
        ("half is .5", 0.5),
        ("first 7, then 12, finally 42", 42.0),
        ("steps...\n#### 72", 72.0),
        ("pages 1-3", 3.0),
        ("x = −5", -5.0),
        ("1,2,3", 3.0),
        ("no digits here", None),
        ("version v1.2.3", None),
    ],
)
def test_extract_last_number(text: str, expected: float | None) -> None:
    assert extract_last_number(text) == expected


def test_extract_json_forms() -> None:
    assert extract_json('  {"a": 1}\n') == {"a": 1}
    assert extract_json("[1, 2]") == [1, 2]
    assert extract_json('Here you go:\n```json\n{"a": [1, 2]}\n```\nHope it helps.') == {"a": [1, 2]}
    assert extract_json('```\n{"bare": true}\n```') == {"bare": True}
    assert extract_json('```python\nprint("x")\n```\nthen\n```json\n{"b": 2}\n```') == {"b": 2}
    assert extract_json('{"a": 1} and some trailing text') == {"a": 1}
    assert extract_json('I think {maybe} the answer is {"a": {"b": 3}} ok') == {"a": {"b": 3}}
    with pytest.raises(ValueError):
        extract_json('{"a": 1,}')
    with pytest.raises(ValueError):
        extract_json("no json at all")
    with pytest.raises(ValueError):
        extract_json('```json\n{"a": 1}\n```', allow_fenced=False)


# --- built-ins --------------------------------------------------------------------------------


def test_builtins_are_registered() -> None:
    assert set(BUILTINS) <= set(reward_names())
    for name in BUILTINS:
        assert get_reward(name) is getattr(rw, name)


def test_exact_match() -> None:
    rows: list[dict[str, Any]] = [{"answer": "Paris"}, {"answer": "Paris"}, {"answer": "Paris"}, {"answer": 42}]
    assert run("exact_match", ["  paris\n", "PARIS", "Lyon", "42"], rows) == [1.0, 1.0, 0.0, 1.0]
    assert run("exact_match", ["paris", "Paris"], rows[:2], case_sensitive=True) == [0.0, 1.0]
    assert run("exact_match", [" Paris", "Paris"], rows[:2], strip=False) == [0.0, 1.0]
    assert run("exact_match", ["yes"], [{"label": "YES"}], reference_field="label") == [1.0]


def test_numeric_match() -> None:
    completions = [
        "2 + 2 = 4, so the total is 1,234.",
        "The answer is -3",
        "about 1e-3",
        "I computed 72 then 73",
        "no idea",
        "41",
    ]
    rows: list[dict[str, Any]] = [
        {"answer": "1234"},
        {"answer": -3},
        {"answer": 0.001},
        {"answer": "... #### 73"},
        {"answer": 5},
        {"answer": 42},
    ]
    assert run("numeric_match", completions, rows) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert run("numeric_match", ["100.4"], [{"answer": 100}], rel_tol=0.01) == [1.0]
    assert run("numeric_match", ["100.4"], [{"answer": 100}]) == [0.0]


def test_numeric_match_reference_without_number_is_a_data_error() -> None:
    with pytest.raises(RewardError, match=r"'numeric_match' failed on row 1: .*holds no number"):
        run("numeric_match", ["1", "2"], [{"answer": 1}, {"answer": "n/a"}])


def test_regex() -> None:
    completions = ["<think>hm</think> 42", "Answer: 42", "<THINK>x</THINK>"]
    assert run("regex", completions, pattern=r"<think>.*</think>") == [1.0, 0.0, 0.0]
    assert run("regex", completions, pattern=r"<think>.*</think>", flags="i") == [1.0, 0.0, 1.0]
    assert run("regex", completions, pattern=r"Answer: \d+", full=True) == [0.0, 1.0, 0.0]
    assert run("regex", ["a\nb"], pattern="a.b", flags="s") == [1.0]
    assert run("regex", ["a\nb"], pattern="a.b") == [0.0]


def test_valid_json() -> None:
    completions = ['{"a": 1}', 'Sure!\n```json\n{"a": 1}\n```', '{"a": 1} is my answer', '{"a": 1,', "plain text"]
    assert run("valid_json", completions) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert run("valid_json", completions, allow_fenced=False) == [1.0, 0.0, 0.0, 0.0, 0.0]


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def test_json_schema_from_param() -> None:
    completions = [
        '{"name": "Ada", "age": 36}',
        '```json\n{"name": "Ada", "age": 36, "extra": 1}\n```',
        '{"name": "Ada"}',  # missing required key
        '{"name": "Ada", "age": "36"}',  # wrong type
        '{"name": "Ada", "age": -1}',
        "not json",
    ]
    assert run("json_schema", completions, schema=PERSON) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_json_schema_from_row_as_dict_or_text() -> None:
    import json

    rows: list[dict[str, Any]] = [{"schema": PERSON}, {"schema": json.dumps(PERSON)}, {"schema": {"type": "array"}}]
    completions = ['{"name": "Ada", "age": 1}', '{"name": "Ada"}', "[1, 2]"]
    assert run("json_schema", completions, rows) == [1.0, 0.0, 1.0]
    assert run("json_schema", ["[]"], [{"s": {"type": "array"}}], schema_field="s") == [1.0]


def test_json_schema_compiles_each_distinct_schema_once() -> None:
    rw._compile_schema.cache_clear()
    other = {"type": "array"}
    reordered = {"required": ["name", "age"], "type": "object", "properties": PERSON["properties"]}
    rows: list[dict[str, Any]] = [{"schema": PERSON}, {"schema": other}, {"schema": reordered}] * 20
    run("json_schema", ['{"name": "a", "age": 1}'] * 60, rows)
    info = rw._compile_schema.cache_info()
    assert info.misses == 2  # PERSON (also as `reordered`) and `other`
    assert info.hits == 58
    run("json_schema", ['{"name": "a", "age": 1}'] * 10, schema=PERSON)
    assert rw._compile_schema.cache_info().misses == 2


def test_json_schema_errors() -> None:
    with pytest.raises(InvalidInput, match="invalid JSON Schema") as err:
        RewardSet([RewardSpec("json_schema", params={"schema": {"type": "nope"}})])
    assert err.value.field == "rewards[0].params"
    with pytest.raises(RewardError, match=r"failed on row 0: .*no schema param"):
        run("json_schema", ["{}"], [{"answer": 1}])


def test_json_field_match() -> None:
    rows: list[dict[str, Any]] = [
        {"answer": "Paris"},
        {"answer": "Paris"},
        {"answer": 42},
        {"answer": "42"},
        {"answer": 42},
        {"answer": True},
        {"answer": 1},
        {"answer": "Paris"},
        {"answer": "Paris"},
    ]
    completions = [
        '{"answer": " paris "}',
        '```json\n{"answer": "Lyon"}\n```',
        '{"answer": 42.0}',
        '{"answer": 42}',
        '{"answer": "forty-two"}',
        '{"answer": true}',
        '{"answer": true}',  # a boolean never equals a number
        '{"city": "Paris"}',
        "Paris",
    ]
    assert run("json_field_match", completions, rows) == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert run("json_field_match", ['{"x": 3.14}'], [{"pi": 3.14159}], field="x", reference_field="pi") == [0.0]
    tolerant = run(
        "json_field_match", ['{"x": 3.14}'], [{"pi": 3.14159}], field="x", reference_field="pi", numeric_tol=0.01
    )
    assert tolerant == [1.0]
    assert run("json_field_match", ['{"answer": "paris"}'], rows[:1], case_sensitive=True) == [0.0]


def test_contains() -> None:
    completions = ["The Eiffel Tower is in Paris, France.", "It is in Paris.", "No idea."]
    words = ["paris", "france"]
    assert run("contains", completions, keywords=words) == [1.0, 0.0, 0.0]
    assert run("contains", completions, keywords=words, mode="any") == [1.0, 1.0, 0.0]
    assert run("contains", completions, keywords=words, mode="fraction") == [1.0, 0.5, 0.0]
    assert run("contains", completions, keywords=words, case_sensitive=True, mode="any") == [0.0, 0.0, 0.0]
    rows: list[dict[str, Any]] = [{"must": ["Eiffel"]}, {"must": "Paris"}, {"must": []}]
    assert run("contains", completions[:2], rows[:2], reference_field="must") == [1.0, 1.0]
    assert run("contains", completions[:2], rows[:2], reference_field="must", keywords="france") == [1.0, 0.0]
    with pytest.raises(RewardError, match=r"failed on row 2: .*no keywords"):
        run("contains", completions, rows, reference_field="must")


def test_length_penalty() -> None:
    completions = ["x" * n for n in (50, 100, 150, 200, 300)]
    # 0 up to target_chars, -scale at max_chars, linear beyond: -scale * max(0, L - 100) / (200 - 100)
    assert run("length_penalty", completions, target_chars=100, max_chars=200) == [0.0, 0.0, -0.5, -1.0, -2.0]
    assert run("length_penalty", completions, target_chars=100, max_chars=200, scale=0.1) == pytest.approx(
        [0.0, 0.0, -0.05, -0.1, -0.2]
    )
    # a single limit: 0 up to it, -scale at twice it
    assert run("length_penalty", completions, max_chars=100) == [0.0, 0.0, -0.5, -1.0, -2.0]
    assert run("length_penalty", completions, target_chars=200) == [0.0, 0.0, 0.0, 0.0, -0.5]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("regex", {}, "pattern"),
        ("regex", {"pattern": "("}, "bad regex"),
        ("regex", {"pattern": "a", "flags": "q"}, "unknown regex flags"),
        ("contains", {}, "keywords or reference_field"),
        ("contains", {"keywords": ["a"], "mode": "most"}, "mode must be"),
        ("length_penalty", {}, "target_chars, max_chars"),
        ("length_penalty", {"target_chars": 200, "max_chars": 100}, "must exceed"),
        ("numeric_match", {"rel_tol": -1}, "rel_tol"),
        ("exact_match", {"reference": "answer"}, "unexpected keyword"),
    ],
)
def test_bad_builtin_params_fail_when_the_set_is_built(name: str, params: dict[str, Any], message: str) -> None:
    specs = [RewardSpec("exact_match"), RewardSpec(name, params=params, alias="second")]
    with pytest.raises(InvalidInput, match=message) as err:
        RewardSet(specs)
    assert err.value.field == "rewards[1].params"
    assert str(err.value).startswith("rewards[1].params: ")


# --- user functions ---------------------------------------------------------------------------

USER_REWARDS = """
    def score(prompts, completions, rows, bonus=0.0):
        return [float(len(c) == int(r["answer"])) + bonus for c, r in zip(completions, rows)]

    def needs_answer(prompts, completions, rows):
        return [1.0 if r["answer"] else 0.0 for r in rows]

    def batch_only(prompts, completions, rows):
        if len(completions) > 1:
            raise RuntimeError("batch too big")
        return [0.0] * len(completions)

    def short(prompts, completions, rows):
        return [1.0] * (len(completions) - 1)

    def nan_at_2(prompts, completions, rows):
        return [float("nan") if i == 2 else 0.0 for i in range(len(completions))]

    def text_values(prompts, completions, rows):
        return ["1.0"] * len(completions)

    def not_a_list(prompts, completions, rows):
        return 1.0

    def only_completions(completions):
        return [0.0] * len(completions)

    class Scorer:
        @staticmethod
        def score(prompts, completions, rows):
            return [0.5] * len(completions)

    THRESHOLD = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    write_module(tmp_path, "deepext_test_user_rewards", USER_REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "deepext_test_user_rewards"


def test_user_function_by_module_ref(user_module: str) -> None:
    fn = get_reward(f"{user_module}:score")
    assert fn([""], ["abc"], [{"answer": 3}]) == [1.0]
    rewards = RewardSet([RewardSpec(f"{user_module}:score", params={"bonus": 0.5}, alias="len")])
    total, metrics = rewards.score(["p", "p"], ["abc", "ab"], [{"answer": 3}, {"answer": 3}])
    assert total == [1.5, 0.5]
    assert metrics == {"len": [1.5, 0.5]}
    assert get_reward(f"{user_module}:Scorer.score")([""], ["x"], [{}]) == [0.5]


def test_user_function_by_file_ref(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    path = write_module(tmp_path / "pkg", "my_rewards", USER_REWARDS)  # not on sys.path
    fn = get_reward(f"{path}:score")
    assert fn([""], ["ab"], [{"answer": 2}]) == [1.0]
    assert get_reward(f"{path}:score") is fn  # the file is loaded once
    _, metrics = RewardSet([RewardSpec(f"{path}:score")]).score([""], ["ab"], [{"answer": 2}])
    assert metrics == {f"{path}:score": [1.0]}


def test_raising_user_reward_names_function_and_row(user_module: str) -> None:
    name = f"{user_module}:needs_answer"
    rows: list[dict[str, Any]] = [{"answer": 1}, {"answer": 2}, {"answer": 0}, {"other": 1}, {"answer": 5}]
    rewards = RewardSet([RewardSpec("regex", params={"pattern": r"\d"}), RewardSpec(name)])
    with pytest.raises(RewardError) as err:
        rewards.score([""] * 5, ["1", "2", "3", "4", "5"], rows)
    assert str(err.value) == f"reward '{name}' failed on row 3: KeyError('answer')"
    assert err.value.reward == name
    assert err.value.row == 3
    assert isinstance(err.value.__cause__, KeyError)


def test_reward_failing_only_on_the_whole_batch(user_module: str) -> None:
    rewards = RewardSet([RewardSpec(f"{user_module}:batch_only")])
    with pytest.raises(RewardError, match=r"batch too big.*no single row fails alone") as err:
        rewards.score(["", ""], ["a", "b"], [{}, {}])
    assert err.value.row is None


@pytest.mark.parametrize(
    ("function", "message", "row"),
    [
        ("short", "failed: returned 3 values for 4 completions", None),
        ("nan_at_2", "failed on row 2: returned nan, not a finite number", 2),
        ("text_values", "failed on row 0: returned '1.0' \\(str\\), not a number", 0),
        ("not_a_list", "failed: returned a float, not a list of 4 floats", None),
    ],
)
def test_bad_return_values(user_module: str, function: str, message: str, row: int | None) -> None:
    rewards = RewardSet([RewardSpec(f"{user_module}:{function}")])
    with pytest.raises(RewardError, match=f"^reward '{user_module}:{function}' {message}$") as err:
        rewards.score([""] * 4, ["a"] * 4, [{}] * 4)
    assert err.value.row == row


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_builtin", "unknown reward 'no_such_builtin'; built-ins: contains, exact_match"),
        ("deepext_no_such_module_xyz:score", "module 'deepext_no_such_module_xyz' not found"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}:THRESHOLD", "THRESHOLD is a int, not callable"),
        ("{module}:", "expected 'module:function'"),
        (":score", "expected 'module:function'"),
        ("/no/such/dir/rewards.py:score", "file '/no/such/dir/rewards.py' not found"),
        ("{broken}:score", "importing module 'deepext_test_broken_rewards' failed: ModuleNotFoundError"),
    ],
)
def test_bad_refs_name_the_field(tmp_path: Path, user_module: str, ref: str, message: str) -> None:
    write_module(tmp_path, "deepext_test_broken_rewards", "import deepext_missing_dependency_xyz\n")
    ref = ref.format(module=user_module, broken="deepext_test_broken_rewards")
    with pytest.raises(InvalidInput) as err:
        RewardSet([RewardSpec("exact_match"), RewardSpec(ref, alias="second")])
    assert err.value.field == "rewards[1].name"
    assert str(err.value).startswith("rewards[1].name: ")
    assert message in str(err.value)
    with pytest.raises(InvalidInput, match=r"reward|module|file"):
        get_reward(ref)


def test_user_function_with_the_wrong_signature(user_module: str) -> None:
    with pytest.raises(InvalidInput, match="does not accept fn\\(prompts, completions, rows") as err:
        RewardSet([RewardSpec(f"{user_module}:only_completions")])
    assert err.value.field == "rewards[0].params"
    with pytest.raises(InvalidInput, match="unexpected keyword argument 'bonsu'"):
        RewardSet([RewardSpec(f"{user_module}:score", params={"bonsu": 1.0})])


# --- RewardSet --------------------------------------------------------------------------------


def test_weights_combine() -> None:
    rewards = RewardSet(
        [
            RewardSpec("numeric_match", weight=1.0),
            RewardSpec("regex", weight=0.25, params={"pattern": r"^<think>"}, alias="format"),
            RewardSpec("length_penalty", weight=2.0, params={"max_chars": 20}),
        ]
    )
    assert rewards.metrics == ["numeric_match", "format", "length_penalty"]
    completions = ["<think>so</think> 42", "42", "<think>" + "x" * 23 + " 7"]  # the last is 32 chars
    total, metrics = rewards.score(["q"] * 3, completions, [{"answer": 42}] * 3)
    assert metrics == {"numeric_match": [1.0, 1.0, 0.0], "format": [1.0, 0.0, 1.0], "length_penalty": [0.0, 0.0, -0.6]}
    assert total == pytest.approx([1.25, 1.0, 0.25 - 1.2])
    assert all(isinstance(v, float) for v in total)


def test_empty_batch() -> None:
    assert RewardSet([RewardSpec("exact_match")]).score([], [], []) == ([], {"exact_match": []})


def test_mismatched_batch_lengths() -> None:
    with pytest.raises(ValueError, match="2 prompts, 1 completions and 1 rows"):
        RewardSet([RewardSpec("exact_match")]).score(["a", "b"], ["a"], [{"answer": "a"}])


@pytest.mark.parametrize(
    ("specs", "field", "message"),
    [
        ([], "rewards", "at least one reward"),
        ([RewardSpec("exact_match", weight=math.nan)], "rewards[0].weight", "finite number"),
        ([RewardSpec("exact_match", weight="1")], "rewards[0].weight", "finite number"),  # type: ignore[arg-type]
        ([RewardSpec("exact_match", params=[1])], "rewards[0].params", "mapping"),  # type: ignore[arg-type]
        ([RewardSpec("exact_match"), RewardSpec("exact_match")], "rewards[1].alias", r"already used by rewards\[0\]"),
    ],
)
def test_bad_specs(specs: list[RewardSpec], field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        RewardSet(specs)
    assert err.value.field == field


def test_same_reward_twice_with_aliases() -> None:
    rewards = RewardSet(
        [
            RewardSpec("contains", params={"keywords": ["a"]}, alias="has_a"),
            RewardSpec("contains", weight=-1.0, params={"keywords": ["b"]}, alias="has_b"),
        ]
    )
    total, metrics = rewards.score(["", ""], ["a", "ab"], [{}, {}])
    assert metrics == {"has_a": [1.0, 1.0], "has_b": [0.0, 1.0]}
    assert total == [1.0, 0.0]


def test_register_reward() -> None:
    def constant(prompts: list[str], completions: list[str], rows: list[dict[str, Any]]) -> list[float]:
        return [1.0] * len(completions)

    try:
        assert register_reward("test_constant")(constant) is constant
        register_reward("test_constant")(constant)  # the same function again is fine
        assert run("test_constant", ["a", "b"]) == [1.0, 1.0]
        with pytest.raises(ValueError, match="already registered"):
            register_reward("test_constant")(lambda p, c, r: [0.0] * len(c))
        with pytest.raises(ValueError, match="already registered"):
            register_reward("exact_match")(constant)
    finally:
        rw._REWARDS.pop("test_constant", None)
