"""Readers for the deployment files, shared by this package's tests: Compose's variable interpolation,
Dockerfile instructions and the environment an image sets, and which DEEPEXT_* names are settings.

Nothing here starts a container: there is no Docker engine on the project's machines, so the files
are parsed and cross-checked against each other and against the code they configure.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepext.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
CLUSTER_FILE = ROOT / "cluster.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "cuda": ROOT / "docker" / "Dockerfile.cuda"}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A `${...}` Compose would refuse: unclosed, not a variable, or a required variable unset."""


# ---- Compose interpolation
def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` as Compose resolves it against `env`: `$$` is a dollar sign; `$VAR`, `${VAR}`,
    `${VAR:-default}` / `${VAR-default}` (empty / unset), `${VAR:?message}` / `${VAR?message}`,
    `${VAR:+other}` / `${VAR+other}`; defaults may hold further `${...}`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif text[i] == "$" and (match := _NAME.match(text, i + 1)):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth, i = 1, start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def _substitute(expression: str, env: Mapping[str, str]) -> str:
    match = _NAME.match(expression)
    if match is None:
        raise InterpolationError(f"not a variable: ${{{expression}}}")
    name, rest = match.group(), expression[match.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"unsupported expression: ${{{expression}}}")
    argument = rest[len(operator) :]
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return value if present and value is not None else interpolate(argument, env)
    if operator.endswith("?"):
        if not present or value is None:
            raise InterpolationError(f"{name} is required: {argument}")
        return value
    return interpolate(argument, env) if present else ""


def variables_in(text: str) -> set[str]:
    """Every variable name `text` refers to, those in nested defaults included (`$$` escapes none)."""
    unescaped = text.replace("$$", "")
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", unescaped))


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """A parsed YAML tree with every string value interpolated (keys are not, as in Compose)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    return resolve(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), env)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# ---- services
def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of Compose's forms, as strings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def command_text(service: Mapping[str, Any]) -> str:
    command = service.get("command", "")
    return shlex.join(command) if isinstance(command, list) else str(command)


def healthcheck_text(service: Mapping[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test", "")
    return " ".join(test) if isinstance(test, list) else str(test)


def exposed_ports(service: Mapping[str, Any]) -> set[int]:
    """Container ports a service declares: `expose`, and the container side of `ports`."""
    ports = {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def named_volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Mount target -> named volume (bind mounts of host paths left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if not source.startswith((".", "/", "~")):
            mounts[target] = source
    return mounts


def flag_values(command: str, flag: str) -> list[str]:
    """Values of `--flag=value` / `--flag value` in a shell command line."""
    tokens = shlex.split(command)
    values = []
    for i, token in enumerate(tokens):
        if token.startswith(f"{flag}="):
            values.append(token.split("=", 1)[1])
        elif token == flag and i + 1 < len(tokens):
            values.append(tokens[i + 1])
    return values


def unknown_ray_start_flags(command: str) -> list[str]:
    """Flags given to `ray start` in a shell command line that Ray's CLI does not have."""
    from ray.scripts.scripts import start

    known = {opt for param in start.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = []
    for segment in re.findall(r"ray start\s+([^;&|]*)", command):
        flags = [token.split("=", 1)[0] for token in shlex.split(segment) if token.startswith("--")]
        unknown += [flag for flag in flags if flag not in known]
    return unknown


# ---- Dockerfiles
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = " ".join(part for part in (pending, line.removesuffix("\\").strip()) if part)
        if not line.endswith("\\"):
            keyword, _, arguments = pending.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def dockerfile_args(path: Path) -> dict[str, str | None]:
    """ARG name -> its default (None when it has none)."""
    declared: dict[str, str | None] = {}
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "ARG":
            name, sep, default = arguments.partition("=")
            declared[name] = default if sep else None
    return declared


def image_env(path: Path) -> dict[str, str]:
    """The environment an image's ENV instructions set (values as written)."""
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                env[key] = value
    return env


# ---- settings
def is_settings_variable(name: str) -> bool:
    """Whether `name` is exactly the variable of a `Settings` field (`DEEPEXT_<FIELD>`, upper case)."""
    field = name.removeprefix("DEEPEXT_")
    return name.startswith("DEEPEXT_") and field.isupper() and field.lower() in Settings.model_fields


def unknown_deepext_variables(names: Iterable[str]) -> list[str]:
    """The DEEPEXT_* names no setting reads: a typo there is silently ignored by the platform."""
    return sorted(name for name in names if name.startswith("DEEPEXT_") and not is_settings_variable(name))


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process with exactly these DEEPEXT_* variables reads (the test's own removed)."""
    for name in list(os.environ):
        if name.startswith("DEEPEXT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("DEEPEXT_"):
            monkeypatch.setenv(name, value)
    return Settings()
