"""The web app in real headless Chromium against the API started by the test: log in, create a
project, upload a dataset (and a bad one), what a viewer is not offered, the admin's audit log, log
out, session expiry, a model version with its lineage and a deployment, evaluation runs and their
comparison, provider credentials, API tokens. Each page is saved as a screenshot (see conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from deepext.client import ApiError, DeepextClient
from tests.helpers import free_port
from tests.serve.conftest import PASSWORD
from tests.ui.conftest import Ui

pytestmark = pytest.mark.slow


def log_in(page: Any, username: str) -> None:
    page.locator("#login-username").get_by_role("textbox").fill(username)
    page.locator("#login-password input").fill(PASSWORD)
    page.locator("#login-button").click()
    # Every page has loaded for this user once the app sets its ready marker.
    page.locator(f'#app-ready .ready[data-user="{username}"]').wait_for(state="attached")


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def pick(page: Any, selector: str, text: str) -> None:
    """Choose the option containing `text` in the Gradio dropdown at `selector` (typing filters it)."""
    page.locator(f"{selector} input").click()
    page.get_by_role("option").filter(has_text=text).first.click()


def expect_text(page: Any, selector: str, pattern: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_contain_text(re.compile(pattern), timeout=30_000)


def fill_number(scope: Any, label: str, value: float) -> None:
    """Fill a Gradio Number and make sure the value stuck: a Number inside an accordion that has
    just opened can be re-rendered with its default after the fill (a CI run deployed with the
    default 2048 instead of the 1024 filled in)."""
    from playwright.sync_api import expect

    box = scope.get_by_label(label, exact=True)
    for _ in range(3):
        box.fill(str(value))
        box.press("Tab")  # Gradio's Number commits on blur
        box.page.wait_for_timeout(300)
        if box.input_value() == str(value):
            break
    expect(box).to_have_value(str(value))


def test_wrong_password_is_a_readable_message(page: Any, ui: Ui) -> None:
    page.locator("#login-username").get_by_role("textbox").fill("owner")
    page.locator("#login-password input").fill("not the password")
    page.locator("#login-button").click()
    expect_text(page, "#login-notice", r"HTTP 401")
    assert "Traceback" not in page.content()
    ui.shot(page, "01-login-error")


def test_log_in_and_create_a_project(page: Any, ui: Ui) -> None:
    log_in(page, "owner")
    open_tab(page, "Projects")
    expect_text(page, "#who", r"owner in p\s*$")
    expect_text(page, "#projects-table", r"\bp\b")
    expect_text(page, "#members-table", r"maintainer")
    page.locator("#new-project-name").get_by_role("textbox").fill("ui-demo")
    page.locator("#create-project").click()
    expect_text(page, "#projects-status", r"ui-demo.*created")
    expect_text(page, "#projects-table", r"ui-demo")
    expect_text(page, "#who", r"owner in ui-demo")
    ui.shot(page, "02-projects")


def test_upload_a_dataset_see_its_preview_and_a_row_error(page: Any, ui: Ui, tmp_path: Path) -> None:
    good = tmp_path / "capitals.jsonl"
    good.write_text(
        '{"prompt": "Capital of France?", "answer": "Paris"}\n{"prompt": "Capital of Peru?", "answer": "Lima"}\n'
    )
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "ok", "answer": "fine"}\n{"prompt": "no closing brace"\n')
    log_in(page, "owner")
    open_tab(page, "Datasets")
    for path in (good, bad):
        page.locator("#dataset-file input[type=file]").set_input_files(str(path))
        page.locator("#dataset-file").get_by_role("cell", name=path.name).wait_for(state="visible")
        page.locator("#upload-dataset").click()
        if path is good:
            expect_text(page, "#datasets-status", r"capitals@1.*2 rows.*detected format")
            expect_text(page, "#preview-table", r"Capital of Peru\?")
            ui.shot(page, "03-datasets")
        else:
            expect_text(page, "#datasets-status", r"broken\.jsonl, row 2")
            ui.shot(page, "04-datasets-row-error")
        page.locator("#dataset-file button[aria-label='Clear']").click()


def test_a_viewer_is_not_offered_training_or_uploads(page: Any, ui: Ui) -> None:
    log_in(page, "viewer")
    expect_text(page, "#who", r"viewer in p\s*$")
    open_tab(page, "Training")
    page.locator("#job-queue").wait_for(state="visible")
    assert page.locator("#new-job").count() == 0 or not page.locator("#new-job").is_visible()
    assert not page.locator("#submit-job").is_visible()
    ui.shot(page, "05-training-viewer")
    open_tab(page, "Datasets")
    assert not page.locator("#upload-dataset").is_visible()
    assert page.get_by_role("tab", name="Admin", exact=True).count() == 0
    open_tab(page, "Playground")
    expect_text(page, "#playground-status", r"No deployed model")
    ui.shot(page, "06-playground")


def test_a_maintainer_gets_the_new_job_form(page: Any, ui: Ui) -> None:
    log_in(page, "maintainer")
    open_tab(page, "Training")
    page.locator("#new-job").click()
    page.locator("#submit-job").wait_for(state="visible")
    ui.shot(page, "07-training-maintainer")


def test_admin_sees_the_audit_rows_of_the_session(page: Any, ui: Ui) -> None:
    log_in(page, "admin")
    open_tab(page, "Admin")
    expect_text(page, "#users-table", r"outsider")
    ui.shot(page, "08-admin-users")
    page.get_by_role("tab", name="Audit log", exact=True).click()
    page.locator("#audit-search").click()
    expect_text(page, "#audit-table", r"project\.create")
    expect_text(page, "#audit-table", r"dataset\.")
    expect_text(page, "#audit-table", r"auth\.login")
    ui.shot(page, "09-admin-audit")


def test_log_out_and_session_expiry(page: Any, ui: Ui) -> None:
    log_in(page, "member")
    page.locator("#logout").click()
    expect_text(page, "#login-notice", r"logged out")
    # Let the logout's page reloads finish: a late one must not mark the next login's pages loaded.
    page.locator('#app-ready .ready[data-user=""]').wait_for(state="attached")
    # A session the server ends (here: the account deactivated) sends the tab back to the login view.
    log_in(page, "member")
    with DeepextClient(ui.api_url) as admin:
        admin.login("admin", PASSWORD)
        admin.update_user("member", active=False)
        try:
            open_tab(page, "Training")
            page.get_by_role("button", name="Reload", exact=True).click()
            expect_text(page, "#login-notice", r"session expired, log in again")
            ui.shot(page, "10-session-expired")
        finally:
            admin.update_user("member", active=True)


def test_the_session_survives_a_reload_until_logout(page: Any, ui: Ui) -> None:
    log_in(page, "maintainer")
    page.reload()
    # The tab comes back signed in (the browser kept the token; the API confirmed it), pages loaded.
    page.locator('#app-ready .ready[data-user="maintainer"]').wait_for(state="attached")
    expect_text(page, "#who", r"maintainer in p\s*$")
    assert not page.locator("#login-form").is_visible()
    page.locator("#logout").click()
    expect_text(page, "#login-notice", r"logged out")
    page.locator('#app-ready .ready[data-user=""]').wait_for(state="attached")
    page.reload()
    page.locator("#login-button").wait_for(state="visible")
    page.wait_for_timeout(3000)  # what a restore would need to sign the tab in again
    assert page.locator("#login-form").is_visible() and not page.locator("#logout").is_visible()
    ui.shot(page, "10b-reloaded-after-logout")


def test_models_page_shows_a_version_its_lineage_and_deploys_it(page: Any, ui: Ui) -> None:
    log_in(page, "owner")
    open_tab(page, "Models")
    expect_text(page, "#model-versions-table", r"sft@2")
    expect_text(page, "#base-models-table", r"tiny")
    # The newest version is picked: its lineage runs base model -> sft@1 -> sft@2.
    expect_text(page, "#model-lineage", r"tiny[\s\S]*sft@1[\s\S]*sft@2")
    assert page.locator("#model-lineage .lineage-node").count() == 3
    expect_text(page, "#model-metrics", r"train_loss")
    form = page.locator("#deploy-form")
    form.get_by_label("Deployment name").fill("chat")
    page.locator("#deploy-button").click()  # the default 2048 is longer than the tiny model reads
    expect_text(page, "#models-status", r"max_model_len 2048 is longer than sft@2 can read.*1024")
    form.get_by_role("button", name="Resources").click()
    fill_number(form, "Max model length", 1024)
    page.locator("#deploy-button").click()
    expect_text(page, "#models-status", r"p/chat.*sft@2.*deploying")
    expect_text(page, "#deployments-table", r"deploying")
    ui.shot(page, "11-models")
    # Export runs as a job: the button queues it with the picked version and types.
    page.locator("#export-types").get_by_label("f16", exact=True).uncheck()
    page.locator("#export-button").click()
    expect_text(page, "#models-status", r"Job #\d+ \(export\) is queued: sft@2 to GGUF \(q8_0\)")


def test_a_viewer_is_not_offered_deploy_or_stage_changes(page: Any, ui: Ui) -> None:
    log_in(page, "viewer")
    open_tab(page, "Models")
    expect_text(page, "#model-lineage", r"sft@2")
    assert not page.locator("#deploy-form").is_visible()
    assert not page.locator("#model-stage-form").is_visible()
    assert not page.locator("#undeploy-button").is_visible()
    ui.shot(page, "12-models-viewer")


def test_evaluation_runs_pass_rates_failures_and_comparison(page: Any, ui: Ui) -> None:
    log_in(page, "member")
    open_tab(page, "Evaluation")
    expect_text(page, "#suites-table", r"qa-suite@1")
    expect_text(page, "#runs-table", r"sft@1")
    # The newest run (sft@2) is shown: 4 of 6 examples passed.
    expect_text(page, "#run-summary", r"pass rate\s*66\.7%")
    expect_text(page, "#run-checks", r"correct")
    expect_text(page, "#run-checks", r"66\.7%")
    expect_text(page, "#run-failures", r"correct")  # the two failed examples, with the check that failed them
    ui.shot(page, "13-evaluation-run")
    page.get_by_role("tab", name="Compare two runs", exact=True).click()
    page.locator("#compare").click()
    expect_text(page, "#compare-table", r"correct\.pass_rate")
    expect_text(page, "#compare-flips", r"Regressions \(pass in A, fail in B\) \(1\)")
    expect_text(page, "#compare-flips", r"Fixes \(fail in A, pass in B\) \(2\)")
    ui.shot(page, "14-evaluation-compare")


def test_provider_credentials_are_stored_and_the_key_never_shown(page: Any, ui: Ui) -> None:
    key = "sk-test-0123456789abcdefWXYZ"
    log_in(page, "owner")
    open_tab(page, "Projects")
    page.locator("#provider-name").get_by_role("textbox").fill("openai")
    page.locator("#provider-key input").fill(key)
    page.locator("#save-provider").click()
    expect_text(page, "#providers-status", r"openai.*registered")
    expect_text(page, "#providers-table", r"stored \(…WXYZ\)")
    assert page.locator("#provider-key input").input_value() == ""
    assert key not in page.content()
    ui.shot(page, "15-providers")

    # Test connection, before saving: an address nobody listens on is reported, and nothing is saved.
    gone = f"http://127.0.0.1:{free_port()}/v1"
    page.locator("#provider-name").get_by_role("textbox").fill("gone")
    page.locator("#provider-url").get_by_role("textbox").fill(gone)
    page.locator("#test-provider").click()
    expect_text(page, "#providers-status", rf"Not reachable.*GET {re.escape(gone)}/models")
    assert "gone" not in page.locator("#providers-table").inner_text()


def test_a_token_is_shown_once_and_revoked(page: Any, ui: Ui) -> None:
    log_in(page, "admin")
    open_tab(page, "Admin")
    page.get_by_role("tab", name="API tokens", exact=True).click()
    page.locator("#token-name").get_by_role("textbox").fill("ci-bot")
    page.locator("#create-token").click()
    expect_text(page, "#admin-status", r"ci-bot.*not shown again")
    secret = page.locator("#token-secret").get_by_role("textbox").input_value()
    assert secret.startswith("dx")
    expect_text(page, "#tokens-table", r"ci-bot")
    ui.shot(page, "16-admin-token-created")
    with DeepextClient(ui.api_url, token=secret) as client:
        token_id = next(t.id for t in client.tokens() if t.name == "ci-bot")
    page.locator("#revoke-id input").fill(str(token_id))
    page.locator("#revoke-token").click()
    expect_text(page, "#admin-status", rf"Token {token_id} revoked")
    assert not page.locator("#token-secret").is_visible()
    assert secret not in page.content()
    with DeepextClient(ui.api_url, token=secret) as client, pytest.raises(ApiError) as refused:
        client.me()
    assert refused.value.status == 401
    ui.shot(page, "17-admin-token-revoked")


def fake_openai_upstream() -> Any:
    """An OpenAI-compatible stand-in whose model `M` streams "M says: PROMPT" in three chunks (the
    gateway sends it the provider's model name, `alpha` for `p/fake/alpha`)."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chat(request: Any) -> StreamingResponse:
        body = await request.json()
        model, prompt = body["model"], body["messages"][-1]["content"]

        def events() -> Any:
            for piece in (model, " says: ", prompt):
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model}
                chunk["choices"] = [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def test_ab_view_streams_two_provider_models_side_by_side(page: Any, ui: Ui) -> None:
    from tests.helpers import uvicorn_in_thread

    with uvicorn_in_thread(fake_openai_upstream()) as upstream, DeepextClient(ui.api_url) as owner:
        owner.login("owner", PASSWORD)
        spec = {"name": "fake", "kind": "openai", "base_url": f"{upstream}/v1", "models": ["alpha", "beta"]}
        owner.create_provider("p", spec)
        try:
            log_in(page, "owner")
            open_tab(page, "Playground")
            page.get_by_role("tab", name="A/B", exact=True).click()
            page.locator("#ab-input").get_by_role("textbox").fill("hello")
            page.locator("#ab-send").click()
            from playwright.sync_api import expect

            expect(page.locator("#ab-answer-a textarea")).to_have_value("alpha says: hello", timeout=30_000)
            expect(page.locator("#ab-answer-b textarea")).to_have_value("beta says: hello", timeout=30_000)
            ui.shot(page, "18-playground-ab")
        finally:
            owner.delete_provider("p", "fake")


def finished_grpo_job(ui: Ui, learning_rate: float, rewards: list[float], *, profile: str | None = None) -> int:
    """A GRPO job on `tiny` and `qa@1` as submitted, walked to succeeded with one reward per step
    (no Ray here: the states and metrics are what the job's entry point would have recorded)."""
    from deepext.train import submit_job
    from deepext.train.jobs import report_metrics, transition

    config = {
        "name": "colors",
        "model": {"path": "tiny"},
        "data": {"dataset": "qa@1"},
        "rewards": [{"name": "regex", "params": {"pattern": "^[a-z]+$"}}],
        "optim": {"learning_rate": learning_rate},
        "schedule": {"steps": len(rewards)},
    }
    job = submit_job(ui.platform, project="p", kind="grpo", config=config, profile=profile, actor="maintainer")
    for state in ("starting", "running"):
        transition(ui.platform, job.id, state, "test")
    for step, reward in enumerate(rewards, start=1):
        report_metrics(ui.platform, job.id, step, {"reward_mean": reward, "loss": 1 - reward, "kl": reward / 100})
    transition(ui.platform, job.id, "succeeded", "test")
    return job.id


def test_profiles_copy_a_job_and_compare_jobs(page: Any, ui: Ui) -> None:
    from playwright.sync_api import expect

    from deepext.train import get_job, list_jobs

    slow = finished_grpo_job(ui, 1e-5, [0.1, 0.2, 0.25])
    fast = finished_grpo_job(ui, 3e-5, [0.2, 0.5, 0.8])
    log_in(page, "maintainer")
    open_tab(page, "Training")

    # Save the form's settings as a profile (its name, model and dataset are not part of it).
    page.locator("#new-job").click()
    form = page.locator("#new-job")
    form.get_by_label("Name", exact=True).fill("small")
    form.get_by_role("button", name="Advanced").click()
    form.get_by_role("button", name="YAML (what is submitted; edit freely)").click()
    group = form.get_by_label("Group size", exact=True)
    group.fill("4")
    group.press("Tab")
    expect(page.locator("#job-yaml")).to_contain_text("group_size: 4", timeout=30_000)
    form.get_by_role("button", name="Save as profile").click()
    page.locator("#profile-name").get_by_role("textbox").fill("four-samples")
    page.locator("#profile-description").get_by_role("textbox").fill("groups of four")
    page.locator("#save-profile").click()
    expect_text(page, "#training-status", r"Profile four-samples@1 saved")

    # Copy this job: the form holds the old job's config, reward params included; submitted, it runs it again.
    pick(page, "#job-picker", f"#{fast} ")
    page.locator("#open-job").click()
    expect_text(page, "#job-header", rf"Job #{fast}.*succeeded")
    page.locator("#copy-job").click()
    expect_text(page, "#training-status", rf"Copied job #{fast}")
    expect(page.locator("#job-yaml")).to_contain_text("3.0e-05", timeout=30_000)
    expect(page.locator("#job-yaml")).to_contain_text("pattern: ^[a-z]+$")
    ui.shot(page, "26-training-copy-job")
    page.locator("#submit-job").click()
    expect_text(page, "#training-status", r"Job #\d+ \(grpo\) is queued")
    copy = list_jobs(ui.platform, project="p")[0]
    assert copy.id not in (slow, fast) and copy.config == get_job(ui.platform, fast).config

    # A job from the profile: the profile fills the form, a field typed after it wins, the job records it.
    pick(page, "#job-profile", "four-samples@1")
    expect_text(page, "#training-status", r"Profile four-samples@1 filled the form")
    expect(page.locator("#job-yaml")).to_contain_text("group_size: 4", timeout=30_000)
    steps = form.get_by_label("Steps", exact=True)
    steps.fill("7")
    steps.press("Tab")
    expect(page.locator("#job-yaml")).to_contain_text("steps: 7", timeout=30_000)
    page.locator("#submit-job").click()
    expect_text(page, "#training-status", r"Job #\d+ \(grpo\) is queued")
    from_profile = list_jobs(ui.platform, project="p")[0]
    assert from_profile.profile == "four-samples@1"
    assert (from_profile.config["sampling"]["group_size"], from_profile.config["schedule"]["steps"]) == (4, 7)
    expect_text(page, "#job-header", r"profile\s*four-samples@1")

    # Compare the two finished jobs: the learning rate is the field that differs; the curves overlay.
    page.locator("#compare-section").get_by_role("button", name="Compare jobs").click()
    for job_id in (slow, fast):
        pick(page, "#compare-jobs", f"#{job_id} ")
    page.locator("#compare-button").click()
    expect_text(page, "#compare-config", r"optim\.learning_rate")
    differing = page.locator("#compare-config tr.differs")
    expect(differing).to_have_count(1)
    expect(differing).to_contain_text("3e-05")
    expect(page.locator("#compare-plot-0 canvas, #compare-plot-0 svg").first).to_be_visible()
    ui.shot(page, "27-training-compare")


def test_the_dashboard_is_the_landing_page_with_audit_for_admins(page: Any, ui: Ui, ray_session: str) -> None:
    from playwright.sync_api import expect

    log_in(page, "owner")
    expect_text(page, "#dashboard-status", r"p.*at a glance")
    expect_text(page, '#dashboard-counts [data-card="model versions"]', r"2")
    expect_text(page, '#dashboard-counts [data-card="evaluations"]', r"2")
    expect_text(page, "#dashboard-cluster", r"Ray cluster[\s\S]*CPU")
    expect(page.locator("#dashboard-days canvas, #dashboard-days svg").first).to_be_visible()
    assert not page.locator("#dashboard-audit").is_visible()
    ui.shot(page, "28-dashboard-owner")
    page.locator("#logout").click()
    page.locator('#app-ready .ready[data-user=""]').wait_for(state="attached")
    with DeepextClient(ui.api_url) as owner:  # the newest event of the project, whatever ran before
        owner.login("owner", PASSWORD)
        owner.save_profile("p", "dashboard-check", "sft", {"training": {"batch_size": 2}})
    log_in(page, "admin")
    expect_text(page, "#dashboard-audit", r"profile\.save[\s\S]*profile:p/dashboard-check@1")
    ui.shot(page, "29-dashboard-admin")


def test_a_sweeps_trials_show_as_a_table_and_their_curves_on_one_plot(page: Any, ui: Ui) -> None:
    """The rows a sweep's Tune callback writes (trials, and metrics tagged with trial and trial step)."""
    from deepext.train import submit_job
    from deepext.train.jobs import report_metrics, transition
    from deepext.train.trials import record_trial

    base = {"model": {"path": "tiny"}, "data": {"dataset": "qa@1"}, "rewards": [{"name": "valid_json"}]}
    base["schedule"] = {"steps": 2}
    config = {"kind": "grpo", "base": base, "search_space": {"optim.learning_rate": {"choice": [0.1, 0.01]}}}
    job = submit_job(ui.platform, project="p", kind="sweep", config={**config, "trials": 2}, actor="maintainer")
    transition(ui.platform, job.id, "starting", "test")
    transition(ui.platform, job.id, "running", "test")
    for number, (rate, rewards, state) in enumerate([(0.1, [0.1, 0.3], "completed"), (0.01, [0.0], "stopped")], 1):
        for step, reward in enumerate(rewards, start=1):
            values = {"trial": number, "trial_step": step, "reward_mean": reward}
            report_metrics(ui.platform, job.id, 2 * (number - 1) + step, values)
        record_trial(ui.platform, job.id, f"t_{number}", number, state=state, config={"optim.learning_rate": rate},
                     metrics={"reward_mean": rewards[-1]}, steps=len(rewards))  # fmt: skip
    transition(ui.platform, job.id, "succeeded", "test")

    log_in(page, "member")
    open_tab(page, "Training")
    pick(page, "#job-picker", f"#{job.id} ")
    page.locator("#open-job").click()
    expect_text(page, "#job-trials", r"t_1[\s\S]*completed[\s\S]*learning_rate=0\.1")
    expect_text(page, "#job-trials", r"t_2[\s\S]*stopped")
    from playwright.sync_api import expect

    expect(page.locator("#plot-0 canvas, #plot-0 svg").first).to_be_visible()
    ui.shot(page, "30-training-sweep-trials")
