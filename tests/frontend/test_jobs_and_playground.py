"""Jobs in a real browser: an admin launches a reward-model job on a tiny model run by a real
Celery worker and watches progress and a chart grow (the playground: test_playground.py)."""

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
