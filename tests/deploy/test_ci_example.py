"""examples/ci: every `deepext` and `ray job` command the pipeline runs exists with the options it passes,
its GRPO config and evaluation suite parse and belong together, and the workflow submits the script with
the cluster's Ray version."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from typing import Any

import typer
import yaml
from ray.dashboard.modules.job.cli import job_cli_group

from deepext.cli.main import app
from deepext.eval.suite import load_suite
from deepext.grpo.config import load_config
from tests.deploy import ROOT

CI = ROOT / "examples" / "ci"
SCRIPT = CI / "train_and_gate.sh"
WORKFLOW = CI / "github-actions.yml"


def shell_lines(text: str) -> list[str]:
    """Logical lines of shell text: continuations joined, comment lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if not line.lstrip().startswith("#")]


def calls(text: str, program: str) -> list[list[str]]:
    """The arguments `program` is run with in shell text, wherever it starts a command."""
    found = []
    for line in shell_lines(text):
        for match in re.finditer(rf"(?:^|[\s;|&(]){re.escape(program)}\s+([^|;&)>]*)", line):
            found.append(shlex.split(match.group(1)))
    return found


def resolve(group: Any, tokens: list[str]) -> tuple[Any, list[str]]:
    """The (sub)command the tokens name, and the tokens after its name. Typer vendors its own click, Ray
    uses click itself: both have groups with `commands` and commands with `params`."""
    command = group
    rest = list(tokens)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"no command {name!r} in {command.name!r}: {tokens}"
        command = command.commands[name]
    return command, rest


def options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def workflow_runs() -> str:
    workflow: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return "\n".join(step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"])


def test_the_script_runs_only_deepext_commands_and_options_that_exist() -> None:
    cli = typer.main.get_command(app)
    text = SCRIPT.read_text(encoding="utf-8")
    used = calls(text, "deepext")
    assert len(used) >= 6  # suites push, jobs submit, jobs show, eval run, models show, eval gate, models tag
    for tokens in used:
        command, rest = resolve(cli, tokens)
        assert not hasattr(command, "commands"), f"{tokens} names a group, not a command"
        unknown = [token for token in rest if token.startswith("--") and token not in options(command)]
        assert unknown == [], (tokens, unknown)
    # Gate rules are passed through an array the script builds.
    assert "require_args+=(--require" in text
    assert "--require" in options(resolve(cli, ["eval", "gate"])[0])
    assert {" ".join(tokens[:2]) for tokens in used} >= {"jobs submit", "eval run", "eval gate"}
    assert any("--wait" in tokens for tokens in used if tokens[:2] == ["jobs", "submit"])


def test_the_script_is_executable_bash_that_stops_at_the_first_failure() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert SCRIPT.stat().st_mode & 0o111, f"{SCRIPT.name} is not executable"
    assert "set -euo pipefail" in SCRIPT.read_text(encoding="utf-8")  # `| tee` keeps deepext's status


def test_its_config_and_suite_parse_and_belong_together() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]+)\}$", text, re.MULTILINE))
    config = load_config(ROOT / defaults["config"])
    suite = load_suite(ROOT / defaults["suite_file"])
    project = defaults["project"]
    assert config.schedule.eval_suite == f"{project}/{suite.name}"  # the suite pushed before the job
    assert config.data.dataset is not None and config.data.dataset.startswith(f"{project}/")
    assert config.data.dataset.split("@")[0] == suite.dataset.split("@")[0]  # one dataset, two splits
    assert config.data.dataset != suite.dataset


def test_the_workflow_submits_the_script_with_the_clusters_ray_version() -> None:
    runs = workflow_runs()
    submitted = calls(runs, "ray")
    assert submitted, "the workflow runs no `ray` command"
    for tokens in submitted:
        command, rest = resolve(job_cli_group, tokens[1:]) if tokens[0] == "job" else (None, [])
        assert command is not None, tokens
        entrypoint = rest[rest.index("--") + 1 :] if "--" in rest else []
        rest = rest[: rest.index("--")] if "--" in rest else rest
        unknown = [token for token in rest if token.startswith("--") and token not in options(command)]
        assert unknown == [] and "--address" in rest, (tokens, unknown)
        if entrypoint:
            assert entrypoint[0] == "bash" and (ROOT / entrypoint[1]) == SCRIPT
    pinned = next(
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("ray[")
    )
    assert f'"ray[default]=={pinned.split("==")[1]}"' in runs
