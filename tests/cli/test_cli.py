"""The `deepext` command line, run in-process (Typer's runner) against a temporary home."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from deepext.cli.main import app

runner = CliRunner()


def deepext(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def test_push_show_preview_split_through_the_cli(tmp_path: Path) -> None:
    assert deepext("projects", "create", "team-a").exit_code == 0
    source = tmp_path / "qa.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(40)))

    result = deepext("datasets", "push", str(source), "--name", "qa", "-p", "team-a", "-l", "golden")
    assert result.exit_code == 0, result.output
    assert "created team-a/qa@1: 40 rows, format prompt_reference" in result.output
    result = deepext("datasets", "push", str(source), "--name", "qa", "-p", "team-a")
    assert "already stored as team-a/qa@1" in result.output

    result = deepext("datasets", "show", "qa@golden", "-p", "team-a", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["row_count"] == 40
    result = deepext("datasets", "preview", "qa", "-p", "team-a", "-n", "2")
    assert '"q1"' in result.output and '"q2"' not in result.output
    result = deepext("datasets", "split", "qa", "-p", "team-a", "--eval-ratio", "0.25")
    assert "team-a/qa@2: 30 rows" in result.output and "team-a/qa@3: 10 rows" in result.output
    assert "qa" in deepext("datasets", "list", "-p", "team-a").output


def test_a_bad_file_prints_file_row_and_reason_and_exits_2(tmp_path: Path) -> None:
    deepext("projects", "create", "demo")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n')
    result = deepext("datasets", "push", str(bad), "--name", "x")
    assert result.exit_code == 2
    assert f"error: {bad}, row 2: malformed JSON" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_unknown_project_exits_1_with_a_hint(tmp_path: Path) -> None:
    source = tmp_path / "a.jsonl"
    source.write_text('{"prompt": "p"}\n')
    result = deepext("datasets", "push", str(source), "--name", "x", "-p", "ghost")
    assert result.exit_code == 1
    assert "project 'ghost' not found; create it with `deepext projects create ghost`" in " ".join(
        result.output.split()
    )


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    from deepext.db import Database

    head = Database("sqlite://").head_revision()  # the newest migration
    result = deepext("db", "upgrade")
    assert result.exit_code == 0 and f"is at revision {head}" in result.output
    assert "up to date" in deepext("db", "current").output


def test_create_tiny_model(tmp_path: Path) -> None:
    result = deepext("models", "create-tiny", str(tmp_path / "tiny"), "--layers", "1")
    assert result.exit_code == 0, result.output
    assert "tiny random-weight model" in result.output
    assert (tmp_path / "tiny" / "config.json").exists()
    result = deepext("models", "create-tiny", str(tmp_path / "bad"), "--hidden-size", "64", "--heads", "4")
    assert result.exit_code == 2 and "head size" in result.output


def test_the_cli_and_the_job_entry_point_import_no_engine_or_training_stack() -> None:
    """Every `deepext` command and every job starts a fresh interpreter: vLLM, Ray Serve LLM, Ray
    Tune, torch and transformers each add seconds to it, and are imported only where they run."""
    import subprocess
    import sys

    heavy = ("vllm", "ray.llm", "ray.serve", "ray.tune", "torch", "transformers")
    for module in ("deepext.cli.main", "deepext.train.entrypoint"):
        code = f"import sys, {module}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
        loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert loaded.split() == [], f"{module} imports {loaded.strip()}"
