"""The model's life in the browser on the real platform: a GRPO job submitted from the new-job form
runs on Ray (vLLM rollouts, Ray Train learner) while its page plots the reward step by step; the model
version it registers shows its lineage; deployed from the Models page it runs on Ray Serve (vLLM);
the Playground chats with it, streamed, and with a knowledge base (RAG) with its sources shown.

Everything is real except the model's size: the tiny random Qwen2 of `tests/conftest.py`, so its
answers are noise - the test checks that they arrive, not what they say."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepext.config import Settings
from deepext.platform import Platform
from tests.helpers import ray_holders, scheduler_running
from tests.ui.conftest import Ui, serving_ui
from tests.ui.test_browser import expect_text, fill_number, log_in, open_tab

pytestmark = pytest.mark.slow
JOB_TIMEOUT = 420_000  # ms: a GRPO job's engine and learner start on 2 shared cores
DEPLOY_TIMEOUT = 300_000
STEPS = 8


@pytest.fixture(scope="module")
def ui(ray_session: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """`deepext up` in this process on the embedded defaults: the job scheduler on the session's Ray,
    the deployment controller, Ray Serve, the API and the web app; project `p` with base model `tiny`
    and dataset `questions`."""
    from ray import serve

    from deepext.models.registry import register_base_model
    from tests.serve.conftest import seed_users

    root = tmp_path_factory.mktemp("lifecycle")
    database = f"sqlite:///{root / 'metadata.db'}"
    settings = Settings(home=root / "home", database_url=database, ray_jobs_url=ray_session, air_gapped=False)
    platform = Platform.open(settings)
    seed_users(platform)
    register_base_model(platform, "tiny", tiny_model, actor="test")
    rows = root / "questions.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Say {w}", "answer": w}) + "\n" for w in ["yes", "no"] * 4))
    platform.datasets.push("p", "questions", rows, actor="test")

    serve.start()
    try:
        screenshots = tmp_path_factory.mktemp("screenshots")
        with (
            scheduler_running(platform, interval=0.5),
            controller_running(platform),
            serving_ui(platform, screenshots) as served,
        ):
            yield served
    finally:
        serve.shutdown()
        platform.close()


@contextlib.contextmanager
def controller_running(platform: Platform) -> Iterator[None]:
    """The deployment controller as `deepext up` runs it, reconciling every second."""
    from deepext.serve.deployments import run_controller

    stop = threading.Event()
    thread = threading.Thread(target=run_controller, args=(platform, stop, 1.0), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_grpo_from_the_browser_to_a_streamed_chat_with_its_model(page: Any, ui: Ui) -> None:
    from playwright.sync_api import expect

    log_in(page, "owner")
    open_tab(page, "Training")
    page.locator("#new-job").click()
    form = page.locator("#new-job")
    form.get_by_label("Name", exact=True).fill("browser-grpo")
    form.get_by_label("Model", exact=True).fill("tiny")
    form.get_by_label("Dataset", exact=True).fill("questions@1")
    form.get_by_label("Rewards (GRPO)", exact=True).fill("exact_match, valid_json:0.5")
    fill_number(form, "Steps", STEPS)
    form.get_by_role("button", name="Advanced").click()
    for label, value in (("Group size", 2), ("Prompts per step", 2), ("Max new tokens", 8)):
        fill_number(form, label, value)
    form.get_by_role("button", name="YAML (what is submitted; edit freely)").click()
    # The YAML view is what gets submitted: wait until it holds every field typed above.
    for line in ("name: browser-grpo", "dataset: questions@1", "max_new_tokens: 8", f"steps: {STEPS}", "group_size: 2"):
        expect(page.locator("#job-yaml")).to_contain_text(line, timeout=30_000)
    ui.shot(page, "20-new-grpo-job")
    page.locator("#submit-job").click()
    expect_text(page, "#training-status", r"Job #\d+ \(grpo\) is queued")

    # The job page opens and follows the job: its points arrive while it runs, then it succeeds.
    try:
        expect(page.locator("#job-header")).to_contain_text("running", timeout=JOB_TIMEOUT)
    except AssertionError as exc:  # a job left queued: say what holds the CPUs it waits for
        raise AssertionError(f"{exc}\nRay now: {ray_holders()}") from None
    logged_while_running: set[int] = set()
    for _ in range(JOB_TIMEOUT // 500):
        header, latest = page.locator("#job-header").inner_text(), page.locator("#job-latest").inner_text()
        state = header.strip().splitlines()[0].rsplit("·", 1)[-1].strip()  # "Job #1 · NAME · grpo · STATE"
        if state == "running":
            logged_while_running.update(int(n) for n in re.findall(r"\((\d+) logged\)", latest))
            if len(logged_while_running) == 1:
                ui.shot(page, "21-grpo-job-running")
        if state in ("succeeded", "failed"):
            break
        page.wait_for_timeout(500)
    expect(page.locator("#job-header")).to_contain_text("succeeded")
    print(f"points shown while the job ran: {sorted(logged_while_running)}")
    assert logged_while_running, "no metric point was shown while the job ran"
    expect(page.locator("#job-latest")).to_contain_text(f"step {STEPS} ({STEPS} logged)", timeout=30_000)
    expect(page.locator("#job-latest")).to_contain_text("reward_mean")
    expect(page.locator("#job-progress")).to_contain_text(f"step {STEPS} of {STEPS}")
    assert page.locator("#plot-0 canvas, #plot-0 svg").count() > 0  # the reward plot is drawn
    ui.shot(page, "22-grpo-job-done")

    # The version it registered, with its lineage: base model tiny -> browser-grpo@1.
    open_tab(page, "Models")
    page.locator("#reload-models").click()
    expect_text(page, "#model-versions-table", r"browser-grpo@1")
    expect_text(page, "#model-lineage", r"tiny[\s\S]*browser-grpo@1")
    assert page.locator("#model-lineage .lineage-node").count() == 2
    deploy = page.locator("#deploy-form")
    deploy.get_by_label("Deployment name").fill("chat")
    deploy.get_by_role("button", name="Resources").click()
    fill_number(deploy, "Max model length", 1024)
    page.locator("#deploy-button").click()
    expect_text(page, "#models-status", r"p/chat.*browser-grpo@1.*deploying")
    for _ in range(DEPLOY_TIMEOUT // 2000):
        page.get_by_role("button", name="Reload deployments", exact=True).click()
        text = page.locator("#deployments-table").inner_text()
        if "running" in text or "failed" in text:
            break
        page.wait_for_timeout(2000)
    expect_text(page, "#deployments-table", r"running")
    ui.shot(page, "23-models-deployed")

    # Chat with it, streamed through the gateway.
    open_tab(page, "Playground")
    page.get_by_role("button", name="Reload models", exact=True).click()
    expect(page.locator("#chat-model input")).to_have_value("p/chat", timeout=30_000)
    page.locator("#chat-input textarea").fill("Say yes")
    page.locator("#chat-send").click(no_wait_after=True)  # the answer streams in; no navigation to wait for
    answer = page.locator("#chatbot .bot-row").last
    expect(answer).not_to_be_empty(timeout=60_000)
    ui.shot(page, "24-playground-chat")

    # With a knowledge base: the answer's sources are listed under it.
    from deepext.knowledge.bases import add_document, create_knowledge_base

    create_knowledge_base(ui.platform, project="p", name="handbook", actor="test")
    text = b"The office is open from nine to five.\n\nLunch is served at noon in the blue room."
    add_document(ui.platform, project="p", knowledge_base="handbook", name="hours.md", data=text, actor="test")
    page.get_by_role("button", name="Reload models", exact=True).click()
    expect(page.locator("#rag-base input")).to_have_value("handbook", timeout=30_000)
    page.locator("#rag-toggle input").check()
    page.locator("#chat-input textarea").fill("When is lunch?")
    page.locator("#chat-send").click(no_wait_after=True)  # the answer streams in; no navigation to wait for
    expect_text(page, "#chat-sources", r"Sources[\s\S]*hours\.md")
    ui.shot(page, "25-playground-rag")
