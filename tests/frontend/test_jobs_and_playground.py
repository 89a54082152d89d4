"""Jobs and the playground in a real browser: an admin launches a reward-model job on a tiny
model run by a real Celery worker and watches progress and a chart grow; the playground streams
replies from two tiny model versions side by side and shows their tokens."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.conf import settings

from tests.tiny_model import build_tiny_model

from .conftest import login, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_admin_launches_a_job_and_watches_progress_and_charts(page, make_user, celery_worker, screenshot):
    from tests.factories import project_with_pairs, register_policy
    from training.models import TrainingJob

    make_user("ada", "admin")
    project, _ = project_with_pairs(slug="browser-jobs", n_tasks=8)
    base = build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8])
    register_policy(base, project=project)

    login(page, "ada")
    page.goto(f"/manage/jobs?project={project.pk}")
    page.get_by_label("Kind").select_option("reward_model")
    # The form is built from the kind's config class: its defaults, ranges and help, not copies.
    from rlhf.reward import RewardConfig

    assert page.get_by_label("epochs", exact=True).input_value() == str(RewardConfig().epochs)
    assert "labels are scarce" in page.locator("#config-fields").inner_text()  # RewardConfig's own comment
    page.get_by_label("batch size", exact=True).fill("0")
    page.get_by_role("button", name="Launch").click()
    field_error = page.locator("#cfg-batch_size-error")
    field_error.wait_for()
    assert ">= 1" in field_error.inner_text() and "batch_size" in page.locator("#launch-error").inner_text()
    assert not TrainingJob.objects.exists()
    screenshot(page, "19-admin-jobs-launch-form-error")
    page.get_by_label("batch size", exact=True).fill("2")
    assert field_error.is_hidden(), "a fixed field loses its error"
    page.get_by_role("button", name="Edit as JSON").click()
    assert json.loads(page.get_by_label("Config (JSON; fields left out take their defaults)").input_value()) == {
        "batch_size": 2}

    # A job with no end of its own: the loss chart must gain points between two looks, whatever
    # the machine's speed; then the admin cancels it from the page.
    endless = {"batch_size": 2, "max_steps": None, "epochs": 10000, "eval_fraction": 0.0, "precision": "fp32",
               "max_length": 64}
    page.get_by_label("Config (JSON; fields left out take their defaults)").fill(json.dumps(endless))
    screenshot(page, "20-admin-jobs-launch")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url("**/manage/jobs/*")
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while len(seen) < 2 and time.monotonic() < deadline:
        points = page.locator(".chart-box[data-metric=loss]")
        if points.count() and int(points.get_attribute("data-points") or 0) > 0:
            seen.add(int(points.get_attribute("data-points")))
        time.sleep(0.3)
    assert len(seen) >= 2, f"the chart never updated while the job ran (saw {seen})"
    assert "started on" in page.locator("#logs").inner_text()
    screenshot(page, "21-admin-job-running")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    page.locator("#state .badge", has_text="cancelled").wait_for(timeout=60_000)

    # A job that ends by itself: the bar reaches 100 % and the chart holds every step.
    page.goto(f"/manage/jobs?project={project.pk}")
    page.get_by_label("Kind").select_option("reward_model")
    page.get_by_role("button", name="Edit as JSON").click()
    config = {"batch_size": 2, "max_steps": 24, "epochs": 20, "eval_fraction": 0.0, "precision": "fp32",
              "max_length": 64}
    page.get_by_label("Config (JSON; fields left out take their defaults)").fill(json.dumps(config))
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url("**/manage/jobs/*")
    page.locator("#state .badge", has_text="succeeded").wait_for(timeout=120_000)
    wait_for(page, "() => document.querySelector('.chart-box[data-metric=loss]').dataset.points === '24'")
    assert page.get_by_role("progressbar", name="Job progress").get_attribute("aria-valuenow") == "100"
    assert page.locator("#progress-steps").inner_text() == "24 / 24 steps"
    page.locator("canvas").first.scroll_into_view_if_needed()
    screenshot(page, "22-admin-job-done")

    page.goto("/manage/models")
    page.get_by_text("reward", exact=True).first.wait_for()
    screenshot(page, "23-admin-models")


@pytest.fixture
def served_models(transactional_db, settings, tmp_path):
    from annotate.services.projects import project_create
    from registry.models import ModelVersion
    from serving.engine import loaded_model_cache_clear

    settings.ARTIFACTS_ROOT = tmp_path
    settings.RLHF_API_RATE_LIMIT = 0
    build_tiny_model(tmp_path / "policies" / "a", seed=0)
    build_tiny_model(tmp_path / "policies" / "b", seed=1)
    project = project_create(name="Demo", slug="demo")
    a = ModelVersion.objects.create(name="policy-a", kind="policy", path="policies/a", source="test",
                                    project=project, promoted=True)
    b = ModelVersion.objects.create(name="policy-b", kind="policy", path="policies/b", source="test",
                                    project=project)
    loaded_model_cache_clear()
    yield a, b
    loaded_model_cache_clear()


def test_playground_streams_two_versions_and_shows_tokens(page, make_user, served_models, screenshot):
    a, b = served_models
    make_user("ada", "admin")
    login(page, "ada")
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model", exact=True).select_option(str(a.pk))
    page.get_by_label("Compare two versions side by side").check()
    page.get_by_label("Second model").select_option(str(b.pk))
    page.get_by_label("Strategy").select_option("top_k")
    page.get_by_label("k", exact=True).fill("5")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Seed").fill("3")

    chunks = []
    page.on("response", lambda r: chunks.append(r) if r.url.endswith("/v1/chat/completions") else None)
    page.get_by_label("Message", exact=True).fill("Say hello in **bold**")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("section[aria-label='Conversation 2'] .msg.assistant[data-done=true]")
    page.wait_for_selector("section[aria-label='Conversation 2'] [aria-label='Answer tokens'] .tok")
    screenshot(page, "30-playground")

    assert len(chunks) == 2 and all(r.headers["content-type"].startswith("text/event-stream") for r in chunks)
    for n in (1, 2):
        column = page.locator(f"section[aria-label='Conversation {n}']")
        answer = column.locator(".msg.assistant .pg-out").inner_text()
        assert answer.strip(), "no streamed answer"
        prompt_tokens = column.locator("[aria-label='Prompt tokens'] .tok")
        assert prompt_tokens.count() > 3
        assert prompt_tokens.first.locator(".id").inner_text().isdigit()
        assert column.locator("[aria-label='Answer tokens'] .tok").count() >= 1
    assert "**bold**" not in page.locator("section[aria-label='Conversation 1'] .msg.user").inner_text()
