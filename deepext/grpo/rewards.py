"""Reward functions for GRPO, and the checks evaluation reuses: one implementation for both.

Every reward, built-in or user-supplied, has one signature::

    fn(prompts: list[str], completions: list[str], rows: list[dict[str, Any]], **params) -> list[float]

`prompts[i]`, `completions[i]` and `rows[i]` (the dataset row's fields, e.g. "answer", "schema")
describe sample i; `params` are the reward's keyword arguments from the config. It returns one finite
float per completion. A config names a reward by its built-in name (`exact_match`) or, like verl, as
a user function `"module:function"` (imported) or `"path/to/file.py:function"` (loaded from the file).

    rewards = RewardSet([RewardSpec("numeric_match"), RewardSpec("regex", 0.2, {"pattern": r"</think>"})])
    total, by_alias = rewards.score(prompts, completions, rows)   # total[i] = sum of weight * value

`RewardSet` resolves every function and checks its params when built, so a bad config fails before
any generation starts; a reward that raises or returns bad values fails with `RewardError` naming the
reward and the row (its 0-based index in the batch).

Pure Python: no torch, no GPU, nothing happens at import (jsonschema is imported on first use).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from deepext.errors import DeepextError, InvalidInput

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

RewardFn = Callable[..., list[float]]
"""fn(prompts: list[str], completions: list[str], rows: list[dict[str, Any]], **params) -> list[float]"""

__all__ = [
    "RewardError",
    "RewardFn",
    "RewardSet",
    "RewardSpec",
    "SchemaViolation",
    "as_number",
    "compile_regex",
    "contains",
    "exact_match",
    "extract_json",
    "extract_last_number",
    "get_reward",
    "json_field_match",
    "json_path",
    "json_schema",
    "keyword_hits",
    "keyword_score",
    "length_penalty",
    "number_matches",
    "numeric_match",
    "reference_number",
    "regex",
    "register_reward",
    "reward_names",
    "schema_validator",
    "schema_violation",
    "texts_equal",
    "valid_json",
    "values_equal",
]


class RewardError(DeepextError):
    """A reward function that raised or returned something other than one finite number per sample."""

    def __init__(self, reward: str, row: int | None, reason: str) -> None:
        where = f" on row {row}" if row is not None else ""
        super().__init__(f"reward {reward!r} failed{where}: {reason}")
        self.reward = reward
        self.row = row
        self.reason = reason


# --- registry ---------------------------------------------------------------------------------

_REWARDS: dict[str, RewardFn] = {}
_FILE_MODULES: dict[Path, ModuleType] = {}
_REF_FORMS = "'module:function' or 'path/to/file.py:function'"


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register a reward under `name`. Re-registering a name to a different function raises ValueError.

    A registered reward must be pure and cheap on an empty batch: `RewardSet` calls
    `fn([], [], [], **params)` when it is built, so a reward that checks its params up front rejects
    a bad config before any work starts.
    """

    def decorator(fn: RewardFn) -> RewardFn:
        existing = _REWARDS.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"reward {name!r} is already registered to {existing.__module__}.{existing.__qualname__}")
        _REWARDS[name] = fn
        return fn

    return decorator


def reward_names() -> list[str]:
    """The registered (built-in) reward names, sorted."""
    return sorted(_REWARDS)


def get_reward(name_or_ref: str, *, field: str | None = None) -> RewardFn:
    """The reward a config names: a registered name, `"module:function"` or `"path/to/file.py:function"`.

    Raises InvalidInput (with `field`, e.g. "rewards[1].name") for an unknown name or a ref that does
    not resolve to a callable, saying why. A file is loaded once per path and is not added to
    `sys.modules`, so cloudpickle ships its functions to Ray workers by value.
    """
    prefix = f"{field}: " if field else ""
    if not isinstance(name_or_ref, str) or not name_or_ref.strip():
        raise InvalidInput(f"{prefix}expected a reward name or {_REF_FORMS}, got {name_or_ref!r}", field=field)
    if ":" not in name_or_ref:
        if name_or_ref in _REWARDS:
            return _REWARDS[name_or_ref]
        raise InvalidInput(
            f"{prefix}unknown reward {name_or_ref!r}; built-ins: {', '.join(reward_names())}; "
            f"or name your own function as {_REF_FORMS}",
            field=field,
        )
    where, _, attr_path = name_or_ref.rpartition(":")
    if not where or not attr_path:
        raise InvalidInput(f"{prefix}reward {name_or_ref!r}: expected {_REF_FORMS}", field=field)
    try:
        module = _load_file_module(where) if _is_file_ref(where) else _import_module(where)
    except InvalidInput as exc:
        raise InvalidInput(f"{prefix}reward {name_or_ref!r}: {exc}", field=field) from exc
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise InvalidInput(f"{prefix}reward {name_or_ref!r}: {where} has no attribute {attr_path!r}", field=field)
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidInput(
            f"{prefix}reward {name_or_ref!r}: {attr_path} is a {type(obj).__name__}, not callable", field=field
        )
    return obj


def _is_file_ref(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise InvalidInput(f"module {name!r} not found (is it on PYTHONPATH?)") from exc
        raise InvalidInput(f"importing module {name!r} failed: {exc!r}") from exc
    except Exception as exc:
        raise InvalidInput(f"importing module {name!r} failed: {exc!r}") from exc


def _load_file_module(where: str) -> ModuleType:
    path = Path(where).expanduser().resolve()
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    if not path.is_file():
        raise InvalidInput(f"file {where!r} not found")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(f"deepext_user_reward_{path.stem}_{digest}", path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"file {where!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvalidInput(f"loading file {where!r} failed: {exc!r}") from exc
    _FILE_MODULES[path] = module
    return module


# --- combining --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardSpec:
    """One reward of a config: what to call, its weight in the total, its params, its metric name."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    alias: str | None = None  # names the metric; default: `name`

    @property
    def metric(self) -> str:
        return self.alias if self.alias is not None else self.name


class RewardSet:
    """Weighted rewards, all resolved and checked when built.

    Construction raises InvalidInput naming the field ("rewards[1].name", "rewards[0].params", ...) for
    an unknown reward, a bad ref, a non-finite weight, params the function does not accept, params a
    built-in rejects, or two rewards reporting under one metric name.
    """

    def __init__(self, specs: Sequence[RewardSpec]) -> None:
        if not specs:
            raise InvalidInput("rewards: at least one reward is needed", field="rewards")
        self.specs: tuple[RewardSpec, ...] = tuple(specs)
        self._fns: list[RewardFn] = []
        seen: dict[str, int] = {}
        for i, spec in enumerate(self.specs):
            at = f"rewards[{i}]"
            fn = get_reward(spec.name, field=f"{at}.name")
            weight = spec.weight
            if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
                raise InvalidInput(f"{at}.weight: expected a finite number, got {weight!r}", field=f"{at}.weight")
            if not isinstance(spec.params, dict):
                raise InvalidInput(f"{at}.params: expected a mapping, got {spec.params!r}", field=f"{at}.params")
            _check_params(spec, fn, at)
            if spec.metric in seen:
                raise InvalidInput(
                    f"{at}.alias: metric {spec.metric!r} is already used by rewards[{seen[spec.metric]}]; "
                    "give one of them an alias",
                    field=f"{at}.alias",
                )
            seen[spec.metric] = i
            self._fns.append(fn)

    @property
    def metrics(self) -> list[str]:
        """The metric name (alias) of each reward, in config order."""
        return [spec.metric for spec in self.specs]

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], rows: Sequence[dict[str, Any]]
    ) -> tuple[list[float], dict[str, list[float]]]:
        """Total weighted reward per sample, and each reward's raw values by metric name.

        Raises RewardError when a reward raises (naming the first row that fails on its own: the reward
        is re-run row by row to find it, so rewards should be free of side effects) or returns the wrong
        number of values, a non-number or a non-finite value.
        """
        n = len(completions)
        if len(prompts) != n or len(rows) != n:
            raise ValueError(f"score() got {len(prompts)} prompts, {n} completions and {len(rows)} rows")
        batch = (list(prompts), list(completions), list(rows))
        total = [0.0] * n
        by_metric: dict[str, list[float]] = {}
        for spec, fn in zip(self.specs, self._fns, strict=True):
            values = _call_reward(spec.name, fn, *batch, spec.params) if n else []
            by_metric[spec.metric] = values
            for i, value in enumerate(values):
                total[i] += spec.weight * value
        return total, by_metric


def _check_params(spec: RewardSpec, fn: RewardFn, at: str) -> None:
    """The params bind to the function's signature; a registered reward also accepts them on an empty batch."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some callables (C functions) have no signature: trust them
        signature = None
    if signature is not None:
        try:
            signature.bind([], [], [], **spec.params)
        except TypeError as exc:
            raise InvalidInput(
                f"{at}.params: reward {spec.name!r} does not accept fn(prompts, completions, rows, "
                f"**{spec.params!r}): {exc}",
                field=f"{at}.params",
            ) from exc
    if any(fn is registered for registered in _REWARDS.values()):
        try:
            fn([], [], [], **spec.params)
        except Exception as exc:
            raise InvalidInput(f"{at}.params: reward {spec.name!r}: {exc}", field=f"{at}.params") from exc


def _call_reward(
    name: str,
    fn: RewardFn,
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    params: dict[str, Any],
) -> list[float]:
    """Run one reward on the batch; on an exception, re-run it sample by sample to name the failing row."""
    try:
        values = fn(prompts, completions, rows, **params)
    except Exception as batch_exc:
        for i in range(len(completions)):
            try:
                fn(prompts[i : i + 1], completions[i : i + 1], rows[i : i + 1], **params)
            except Exception as exc:
                raise RewardError(name, i, repr(exc)) from exc
        raise RewardError(
            name, None, f"{batch_exc!r} on the batch of {len(completions)}, though no single row fails alone"
        ) from batch_exc
    return _checked_values(name, values, len(completions))


def _checked_values(name: str, values: Any, n: int) -> list[float]:
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__") or not hasattr(values, "__iter__"):
        raise RewardError(name, None, f"returned a {type(values).__name__}, not a list of {n} floats")
    if len(values) != n:
        raise RewardError(name, None, f"returned {len(values)} values for {n} completions")
    checked: list[float] = []
    for i, value in enumerate(values):
        if not isinstance(value, numbers.Real):  # bool counts as 1.0 / 0.0
            raise RewardError(name, i, f"returned {value!r} ({type(value).__name__}), not a number")
        number = float(value)
        if not math.isfinite(number):
            raise RewardError(name, i, f"returned {number}, not a finite number")
        checked.append(number)
    return checked


# --- helpers shared with evaluation ------------------------------------------------------------

_NUMBER = re.compile(
    r"""
    (?<![\w.])                                   # not inside a word, a version string or another number
    [-+\u2212]?                                  # sign (a hyphen after a word is a hyphen, not a sign)
    (?: (?:\d{1,3}(?:,\d{3})+(?!\d) | \d+) (?:\.\d+)?   # 1,234.5 or 1234.5
      | \.\d+ )                                  # .5
    (?:[eE][-+]?\d+)?                            # 1e-3
    """,
    re.VERBOSE,
)
_FENCE = re.compile(r"```(\w*)[ \t]*\n?(.*?)```", re.DOTALL)  # group 1: the language tag, 2: the body


def extract_last_number(text: str) -> float | None:
    """The last number written in `text`, or None: "-3", "3.5", "1,234" (1234.0), "1e-3", ".5", "#### 72".

    Commas count as thousands separators only in groups of three ("1,2,3" is three numbers); a hyphen
    right after a letter or digit is not a minus sign ("pages 1-3" ends with 3).
    """
    last = None
    for match in _NUMBER.finditer(text):
        last = match
    if last is None:
        return None
    return float(last.group().replace(",", "").replace("\u2212", "-"))


def extract_json(text: str, allow_fenced: bool = True) -> Any:
    """The JSON value in `text`; raises ValueError if there is none.

    Tries the whole text; then, when `allow_fenced`, the first fenced block tagged ```json (or untagged),
    then the first `{...}` object that parses, ignoring any text around it - or the first `[...]` array
    when there is no object or the array holds it. JSON nested deeper than Python's recursion limit
    (~1000 levels) counts as no JSON, and the search for an object in prose gives up after a few times
    the text's length of failed parsing, so no output costs more than linear time here.
    """
    try:
        return _loads(text)
    except ValueError:
        if not allow_fenced:
            raise
    for match in _FENCE.finditer(text):
        if match.group(1).lower() not in ("", "json"):
            continue  # a ```python block is not the answer
        try:
            return _loads(match.group(2))
        except ValueError:
            break  # only the first JSON block counts
    budget = [4 * len(text) + 65_536]  # characters failed attempts may read, shared by both searches
    found = _first_in_prose(text, _OBJECT_START, budget)
    array = _first_in_prose(text, _ARRAY_START, budget)
    if array is not None and (found is None or array[1] < found[1] < array[2]):
        found = array  # `[{...}, {...}]`: the array, not its first object
    if found is None:
        raise ValueError("no JSON value, ```json block, {...} object or [...] array found")
    return found[0]


_OBJECT_START = re.compile(r'\{\s*["}]')  # where a JSON object can start: `{"` or `{}`
_ARRAY_START = re.compile(r'\[\s*[-\d"\[{\]tfn]')  # `[1`, `["`, `[[`, `[{`, `[]`, `[true`, ...
_DECODER = json.JSONDecoder()


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def _first_in_prose(text: str, starts: re.Pattern[str], budget: list[int]) -> tuple[Any, int, int] | None:
    """(value, start, end) of the first JSON value decoding at a `starts` match, or None."""
    for match in starts.finditer(text):
        start = match.start()
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            budget[0] -= exc.pos - start + 1
            if budget[0] < 0:
                raise ValueError("no JSON found (gave up: too much text that almost parses)") from exc
            continue
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc
        return value, start, end
    return None


def _parse_json(text: str, allow_fenced: bool = True) -> tuple[bool, Any]:
    try:
        return True, extract_json(text, allow_fenced)
    except ValueError:
        return False, None


def json_path(parts: Iterable[str | int]) -> str:
    """A location in a JSON value as a path string: ("items", 2, "price") -> "$.items[2].price";
    a key that is not an identifier is quoted: ("a b",) -> '$["a b"]'."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SchemaViolation:
    """Why a JSON value does not conform: where (a `json_path`) and jsonschema's message."""

    path: str
    message: str


def schema_violation(value: Any, validator: Validator) -> SchemaViolation | None:
    """None when `value` conforms to the validator's schema, else its most relevant error
    (jsonschema's `best_match`). The `json_schema` reward and the `json_schema` eval check both
    decide conformance here."""
    from jsonschema.exceptions import best_match

    try:
        if validator.is_valid(value):
            return None
        error = best_match(validator.iter_errors(value))
    except RecursionError:  # a recursive schema over JSON nested hundreds of levels deep
        return SchemaViolation("$", "JSON nested too deeply to validate")
    if error is None:  # is_valid and iter_errors disagree only for a broken custom validator
        return SchemaViolation("$", "does not conform to the schema")
    return SchemaViolation(json_path(error.absolute_path), error.message)


def schema_validator(schema: dict[str, Any] | bool | str) -> Validator:
    """A jsonschema validator for `schema` (a dict, a bool schema, or its JSON text), compiled once per
    distinct schema (by canonical JSON) and cached. Raises ValueError for JSON text that does not parse
    or an invalid schema."""
    if isinstance(schema, str):
        schema = json.loads(schema)
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"a JSON Schema is an object or a boolean, got {type(schema).__name__}")
    return _compile_schema(json.dumps(schema, sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=1024)
def _compile_schema(canonical: str) -> Validator:
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    schema = json.loads(canonical)
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"invalid JSON Schema: {exc.message}") from exc
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _normalize(text: str, strip: bool, case_sensitive: bool) -> str:
    text = text.strip() if strip else text
    return text if case_sensitive else text.casefold()


def texts_equal(a: str, b: str, *, strip: bool = True, case_sensitive: bool = False) -> bool:
    """`a == b` after stripping surrounding whitespace (when `strip`) and casefolding (unless
    `case_sensitive`): the `exact_match` reward and check."""
    return _normalize(a, strip, case_sensitive) == _normalize(b, strip, case_sensitive)


def reference_number(raw: Any) -> float | None:
    """A reference answer as a number: a finite number as is, else the last number in its text
    ("... #### 1,234" -> 1234.0); None when it holds no number."""
    return float(raw) if _is_number(raw) else extract_last_number(str(raw))


def number_matches(text: str, reference: float, *, rel_tol: float, abs_tol: float) -> tuple[bool, float | None]:
    """Whether the last number in `text` is `math.isclose` to `reference`, and that number (None when
    `text` has none): the `numeric_match` reward and the `numeric` check."""
    got = extract_last_number(text)
    return got is not None and math.isclose(got, reference, rel_tol=rel_tol, abs_tol=abs_tol), got


def as_number(value: Any) -> float | None:
    """A JSON/row value as a number: ints and floats, and strings that are one number; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", ""))
        except ValueError:
            return None
    return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# --- built-in rewards -------------------------------------------------------------------------


@register_reward("exact_match")
def exact_match(
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    *,
    reference_field: str = "answer",
    strip: bool = True,
    case_sensitive: bool = False,
) -> list[float]:
    """1.0 where the completion equals `row[reference_field]` (as text), else 0.0.

    `strip` ignores leading/trailing whitespace; `case_sensitive=False` compares casefolded text.
    """
    return [
        float(texts_equal(c, str(r[reference_field]), strip=strip, case_sensitive=case_sensitive))
        for c, r in zip(completions, rows, strict=True)
    ]


@register_reward("numeric_match")
def numeric_match(
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    *,
    reference_field: str = "answer",
    rel_tol: float = 1e-6,
    abs_tol: float = 1e-9,
) -> list[float]:
    """1.0 where the last number in the completion is close to the reference number, else 0.0.

    The reference is `row[reference_field]`: a number, or text whose last number counts (so a GSM8K
    answer "... #### 1,234" works). Closeness is `math.isclose(got, ref, rel_tol=, abs_tol=)`. A row
    whose reference holds no number is a data error (raises).
    """
    _require(_is_number(rel_tol) and rel_tol >= 0, f"rel_tol must be a number >= 0, got {rel_tol!r}")
    _require(_is_number(abs_tol) and abs_tol >= 0, f"abs_tol must be a number >= 0, got {abs_tol!r}")
    scores = []
    for completion, row in zip(completions, rows, strict=True):
        raw = row[reference_field]
        reference = reference_number(raw)
        if reference is None:
            raise ValueError(f"reference {reference_field!r} holds no number: {raw!r}")
        scores.append(float(number_matches(completion, reference, rel_tol=rel_tol, abs_tol=abs_tol)[0]))
    return scores


_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}


@functools.lru_cache(maxsize=256)
def compile_regex(pattern: str, flags: str = "") -> re.Pattern[str]:
    """`pattern` compiled with `flags` (letters of "imsxa"), cached; ValueError for a bad pattern or flag."""
    unknown = set(flags) - set(_REGEX_FLAGS)
    _require(not unknown, f"unknown regex flags {''.join(sorted(unknown))!r}; use any of 'imsxa'")
    bits = 0
    for letter in flags:
        bits |= _REGEX_FLAGS[letter]
    try:
        return re.compile(pattern, bits)
    except re.error as exc:
        raise ValueError(f"bad regex {pattern!r}: {exc}") from exc


@register_reward("regex")
def regex(
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    *,
    pattern: str,
    full: bool = False,
    flags: str = "",
) -> list[float]:
    """1.0 where `pattern` matches the completion, else 0.0 (a "format" reward).

    `full=True` requires the whole completion to match (re.fullmatch), else a match anywhere
    (re.search). `flags` is letters of "imsxa" (ignorecase, multiline, dotall, verbose, ascii).
    """
    _require(isinstance(pattern, str), f"pattern must be a string, got {pattern!r}")
    _require(isinstance(flags, str), f"flags must be a string of 'imsxa' letters, got {flags!r}")
    compiled = compile_regex(pattern, flags)
    match = compiled.fullmatch if full else compiled.search
    return [float(match(c) is not None) for c in completions]


@register_reward("valid_json")
def valid_json(
    prompts: list[str], completions: list[str], rows: list[dict[str, Any]], *, allow_fenced: bool = True
) -> list[float]:
    """1.0 where the completion holds JSON (see `extract_json`; `allow_fenced=False`: the whole
    completion must be JSON), else 0.0."""
    return [float(_parse_json(c, allow_fenced)[0]) for c in completions]


@register_reward("json_schema")
def json_schema(
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    *,
    schema: dict[str, Any] | str | None = None,
    schema_field: str = "schema",
    allow_fenced: bool = True,
) -> list[float]:
    """1.0 where the completion's JSON conforms to the JSON Schema, 0.0 where it is not JSON or does
    not conform.

    The schema is the `schema` param (dict or JSON text), else `row[schema_field]`. Each distinct
    schema is compiled once (`schema_validator`); `format` keywords are checked where jsonschema can.
    An invalid schema, or a row without one, is a config or data error (raises).
    """
    fixed = schema_validator(schema) if schema is not None else None
    scores = []
    for completion, row in zip(completions, rows, strict=True):
        if fixed is not None:
            validator = fixed
        else:
            row_schema = row.get(schema_field)
            if row_schema is None:
                raise ValueError(f"no schema param and no {schema_field!r} field in the row")
            validator = schema_validator(row_schema)
        ok, value = _parse_json(completion, allow_fenced)
        scores.append(float(ok and schema_violation(value, validator) is None))
    return scores


def _bool_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.strip().casefold() if isinstance(value, str) else repr(value)


def values_equal(got: Any, reference: Any, numeric_tol: float | None = None, case_sensitive: bool = False) -> bool:
    """JSON values compared as `json_field_match` does: booleans only with booleans ("true" text
    counts), numbers with numbers or numeric text (absolute `numeric_tol`, or `math.isclose`
    defaults), text stripped and, unless `case_sensitive`, casefolded; anything else with ==."""
    if isinstance(got, bool) or isinstance(reference, bool):  # true == "true", never 1
        return _bool_text(got) == _bool_text(reference)
    if _is_number(got) or _is_number(reference):
        a, b = as_number(got), as_number(reference)
        if a is None or b is None:
            return False
        return math.isclose(a, b, abs_tol=numeric_tol) if numeric_tol is not None else math.isclose(a, b)
    if isinstance(got, str) and isinstance(reference, str):
        return _normalize(got, True, case_sensitive) == _normalize(reference, True, case_sensitive)
    return bool(got == reference)


@register_reward("json_field_match")
def json_field_match(
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    *,
    field: str = "answer",
    reference_field: str = "answer",
    numeric_tol: float | None = None,
    case_sensitive: bool = False,
    allow_fenced: bool = True,
) -> list[float]:
    """1.0 where the completion's JSON object has `field` equal to `row[reference_field]`, else 0.0
    (also when the completion is not a JSON object or lacks the field).

    Numbers (either side a number, the other a number or numeric text) compare with an absolute
    tolerance `numeric_tol`, or `math.isclose` defaults when None; text compares stripped and, unless
    `case_sensitive`, casefolded; booleans, lists, objects and null compare with ==.
    """
    _require(
        numeric_tol is None or (_is_number(numeric_tol) and numeric_tol >= 0),
        f"numeric_tol must be None or a number >= 0, got {numeric_tol!r}",
    )
    scores = []
    for completion, row in zip(completions, rows, strict=True):
        reference = row[reference_field]
        ok, value = _parse_json(completion, allow_fenced)
        matched = ok and isinstance(value, dict) and field in value
        scores.append(float(matched and values_equal(value[field], reference, numeric_tol, case_sensitive)))
    return scores


def _keyword_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(k, str) for k in value):
        return list(value)
    raise ValueError(f"{what} must be a string or a list of strings, got {value!r}")


@register_reward("contains")
def contains(
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    *,
    keywords: list[str] | str | None = None,
    reference_field: str | None = None,
    mode: str = "all",
    case_sensitive: bool = False,
) -> list[float]:
    """How many of the keywords appear in the completion (as substrings).

    Keywords are the `keywords` param plus `row[reference_field]` (a string or a list of strings);
    at least one source must be given, and a row left with no keywords is a data error (raises).
    `mode`: "all" -> 1.0 if every keyword appears; "any" -> 1.0 if one does; "fraction" -> the share
    of keywords that appear (0.0..1.0).
    """
    _require(mode in ("all", "any", "fraction"), f"mode must be 'all', 'any' or 'fraction', got {mode!r}")
    _require(keywords is not None or reference_field is not None, "give keywords or reference_field (or both)")
    fixed = _keyword_list(keywords, "keywords")
    scores = []
    for completion, row in zip(completions, rows, strict=True):
        words = fixed + (_keyword_list(row[reference_field], f"row {reference_field!r}") if reference_field else [])
        if not words:
            raise ValueError("no keywords for this row")
        scores.append(keyword_score(keyword_hits(completion, words, case_sensitive=case_sensitive), mode))
    return scores


def keyword_hits(text: str, keywords: Sequence[str], *, case_sensitive: bool = False) -> list[bool]:
    """For each keyword, whether it appears in `text` as a substring (casefolded unless `case_sensitive`):
    the `contains` reward and check."""
    if not case_sensitive:
        text = text.casefold()
    return [(k if case_sensitive else k.casefold()) in text for k in keywords]


def keyword_score(hits: Sequence[bool], mode: str) -> float:
    """`keyword_hits` as one score: "all" -> 1.0 if every keyword appears; "any" -> 1.0 if one does;
    "fraction" -> the share that appear. No keywords scores 0.0."""
    if not hits:
        return 0.0
    if mode == "all":
        return float(all(hits))
    if mode == "any":
        return float(any(hits))
    return sum(hits) / len(hits)


@register_reward("length_penalty")
def length_penalty(
    prompts: list[str],
    completions: list[str],
    rows: list[dict[str, Any]],
    *,
    target_chars: int | None = None,
    max_chars: int | None = None,
    scale: float = 1.0,
) -> list[float]:
    """A penalty (<= 0) for completions longer than a target, linear in the extra characters.

    With L = len(completion) in characters, start = target_chars if given else max_chars, and
    span = max_chars - target_chars when both are given, else start:

        penalty = -scale * max(0, L - start) / span

    so it is 0 up to the target, reaches -scale at max_chars (or at twice the single limit given),
    and keeps falling linearly beyond. Needs target_chars >= 0 and/or max_chars > 0, and
    max_chars > target_chars when both are given.
    """
    _require(target_chars is not None or max_chars is not None, "give target_chars, max_chars or both")
    for name, value in (("target_chars", target_chars), ("max_chars", max_chars)):
        _require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
                 f"{name} must be an integer >= 0, got {value!r}")  # fmt: skip
    _require(_is_number(scale) and scale >= 0, f"scale must be a number >= 0, got {scale!r}")
    if target_chars is not None and max_chars is not None:
        _require(max_chars > target_chars, f"max_chars ({max_chars}) must exceed target_chars ({target_chars})")
        start, span = target_chars, max_chars - target_chars
    else:
        start = span = target_chars if target_chars is not None else int(max_chars or 0)
        _require(span > 0, "the single length limit given must be > 0")
    return [-scale * max(0, len(c) - start) / span for c in completions]
