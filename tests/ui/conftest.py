"""The platform's API and the Gradio app, both served over real HTTP from this process, and one
headless Chromium (Debian's, driven by Playwright) for the module.

Screenshots go to a folder under pytest's tmp dir and, when `DEEPEXT_TEST_ARTIFACTS` is set, are
copied to `$DEEPEXT_TEST_ARTIFACTS/ui/` too (CI keeps that folder as the run's artifacts).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deepext.config import Settings
from deepext.platform import Platform
from tests.helpers import free_port, uvicorn_in_thread

CHROMIUM = os.environ.get("DEEPEXT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Ui:
    platform: Platform
    api_url: str
    url: str
    screenshots: Path

    def shot(self, page: Any, name: str) -> Path:
        """A full-page screenshot, kept under tmp and copied to $DEEPEXT_TEST_ARTIFACTS/ui."""
        path = self.screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        artifacts = os.environ.get("DEEPEXT_TEST_ARTIFACTS")
        if artifacts:
            target = Path(artifacts) / "ui"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        return path


def seed_models_and_evaluations(platform: Platform, root: Path) -> None:
    """In project `p`: base model `tiny` (a real tiny Qwen2), versions `sft@1` and `sft@2` (trained
    on top of sft@1, with metrics), suite `qa-suite@1` over dataset `qa@1`, and two finished runs of
    it (run 1 on sft@1, run 2 on sft@2: one regression, two fixes)."""
    from deepext.eval.checks import CheckResult
    from deepext.eval.results import ExampleResult, finish_run, record_examples, start_run
    from deepext.eval.suite import push_suite
    from deepext.models.registry import register_base_model
    from deepext.models.tiny import create_tiny_model
    from deepext.models.versions import register_model_version

    folder = create_tiny_model(root / "tiny")
    register_base_model(platform, "tiny", folder, actor="test")
    register_model_version(platform, project="p", name="sft", folder=folder, base_model="tiny", actor="test")
    register_model_version(
        platform,
        project="p",
        name="sft",
        folder=folder,
        base_model="tiny",
        parent="sft@1",
        metrics={"train_loss": 0.4213, "reward_mean": 0.75},
        actor="test",
    )
    data = root / "qa.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "answer": "a{i}"}}\n' for i in range(6)))
    platform.datasets.push("p", "qa", data, actor="test")
    checks = [
        {"name": "correct", "type": "exact_match", "params": {"reference_field": "answer"}},
        {"name": "polite", "type": "exact_match", "params": {"reference_field": "answer"}, "severity": "warning"},
    ]
    push_suite(platform, "p", {"name": "qa-suite", "dataset": "qa@1", "checks": checks}, actor="test")
    for target, failing in (("sft@1", {0, 1, 2}), ("sft@2", {0, 5})):
        run = start_run(platform, project="p", suite="qa-suite", target=target, actor="test")
        examples = []
        for i in range(6):
            ok = i not in failing
            verdicts = {
                "correct": CheckResult(ok, float(ok), "" if ok else f"expected a{i}, got something else"),
                "polite": CheckResult(True, 1.0, ""),
            }
            examples.append(ExampleResult(i, {"prompt": f"q{i}", "answer": f"a{i}"}, f"q{i}", "out", verdicts, ok))
        record_examples(platform, run.id, examples)
        finish_run(platform, run.id, seconds=1.0)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """API (SQLite, users of tests/serve/conftest.py's `seed_users`) + web app, on free ports."""
    from tests.serve.conftest import seed_users

    root = tmp_path_factory.mktemp("ui")
    # Module-scoped: made before the per-test isolation of DEEPEXT_* variables, so it names every setting
    # it depends on (the provider test registers an external provider: not air-gapped).
    settings = Settings(home=root / "home", database_url=f"sqlite:///{root / 'metadata.db'}", air_gapped=False)
    platform = Platform.open(settings)
    seed_users(platform)
    seed_models_and_evaluations(platform, root)
    try:
        with serving_ui(platform, tmp_path_factory.mktemp("screenshots")) as served:
            yield served
    finally:
        platform.close()


@contextlib.contextmanager
def serving_ui(platform: Platform, screenshots: Path) -> Iterator[Ui]:
    """The platform's API (uvicorn, in a thread) and the web app on it, both on free ports."""
    from apps.gradio.app import build_app, launch
    from deepext.serve.app import create_app

    with uvicorn_in_thread(create_app(platform)) as api_url:
        app = build_app(api_url)
        url = launch(app, host="127.0.0.1", port=free_port())
        try:
            yield Ui(platform, api_url, url, screenshots)
        finally:
            app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, ui: Ui) -> Iterator[Any]:
    """A fresh browser context (no cookies, no session) at laptop width, on the app."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)  # 2 shared cores: be patient
    tab = context.new_page()
    tab.goto(ui.url)
    try:
        yield tab
    finally:
        context.close()
