"""The job pages as an admin sees them: a PPO and a reward-model run (real, on a tiny model) show the
few charts that tell whether training is healthy first, the rest folded away, constants as a table,
whole-number steps, readable numbers and a result summary; a job shows its total, stage and ETA
before its first step; the jobs list has duration and produced-model columns."""

from __future__ import annotations

import re
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from tests.tiny_model import build_tiny_model

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PPO = {"iterations": 4, "rollout_batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1, "precision": "fp32",
       "max_length": 64, "scorer": "numeric", "learning_rate": 8e-6,
       "sampling": {"strategy": "top_p", "top_p": 1.0, "max_new_tokens": 4}}
RM = {"batch_size": 2, "max_steps": 5, "epochs": 3, "eval_fraction": 0.34, "precision": "fp32", "max_length": 64}


@pytest.fixture
def project(transactional_db):
    from tests.factories import project_with_pairs, register_policy

    project, _ = project_with_pairs(slug=f"jobpage-{uuid.uuid4().hex[:6]}", n_tasks=30)  # 10 held out
    register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]), project=project)
    return project


def _run(project, kind, config):
    from training.runner import job_run
    from training.services.jobs import training_job_launch

    job = training_job_launch(project=project, kind=kind, config=config)
    assert job_run(job_id=job.pk, hostname="inline@test") == "succeeded"
    job.refresh_from_db()
    return job


def _chart_titles(page, where: str) -> list[str]:
    return page.locator(f"{where} .chart-box").evaluate_all("els => els.map(e => e.dataset.title)")


def _ticks(page, title: str, axis: str) -> list:
    return page.locator(f'.chart-box[data-title="{title}"] canvas').evaluate(
        f"c => Chart.getChart(c).scales.{axis}.ticks.map(t => [t.value, t.label])")


def test_ppo_job_page_shows_health_first_and_folds_the_rest(page, make_user, project, screenshot):
    job = _run(project, "ppo", PPO)
    make_user("ada", "admin")
    login(page, "ada")
    page.goto(f"/manage/jobs/{job.pk}")
    page.locator("#result:not([hidden])").wait_for()
    page.locator('#charts .chart-box[data-points="4"]').first.wait_for()

    assert _chart_titles(page, "#charts") == ["Reward and objective", "KL to the starting policy",
                                              "Response length (tokens)", "Entropy"]
    more = page.locator("#more-metrics")
    assert more.is_visible() and more.get_attribute("open") is None  # folded away
    folded = _chart_titles(page, "#groups")
    # Constants and counters get no chart: kl_coef is fixed here, total_iterations never changes.
    for name in ("kl coef", "total iterations", "iteration", "step"):
        assert name not in folded
    constants = page.locator("#constants").text_content()
    assert "kl coef" in constants and "0.05" in constants
    assert len(folded) + len(_chart_titles(page, "#charts")) < 33

    # Whole steps only, and no "8.000000E-6" anywhere in the axes.
    for value, _label in _ticks(page, "Reward and objective", "x"):
        assert float(value).is_integer()
    more.locator("summary").click()
    page.locator('.chart-box[data-title="lr"]').wait_for()
    labels = [label for _v, label in _ticks(page, "lr", "y")]
    assert labels and not any("E" in str(label) or "000000" in str(label) for label in labels), labels
    assert re.search(r"\de-6", " ".join(map(str, labels))), labels

    summary = page.locator("#result-rows").inner_text()
    assert "Produced" in summary and f"model #{job.outputs['model_version']}" in summary
    assert "reward" in summary and "kl" in summary
    assert "{" not in page.locator("#logs div").last.inner_text()  # the last log line is prose, not a dict
    assert page.locator("#progress-steps").inner_text() == "4 / 4 iterations"
    screenshot(page, "30-ppo-job-page")
    more.locator("summary").scroll_into_view_if_needed()
    screenshot(page, "31-ppo-job-more-metrics")


def test_reward_model_job_page_charts_loss_and_held_out_accuracy(page, make_user, project, screenshot):
    job = _run(project, "reward_model", RM)
    make_user("ada", "admin")
    login(page, "ada")
    page.goto(f"/manage/jobs/{job.pk}")
    page.locator("#result:not([hidden])").wait_for()
    page.locator('#charts .chart-box[data-metric="loss"][data-points="5"]').wait_for()
    assert _chart_titles(page, "#charts") == ["Loss", "Pairwise accuracy"]
    legend = page.locator('.chart-box[data-title="Pairwise accuracy"] canvas').evaluate(
        "c => Chart.getChart(c).data.datasets.map(d => [d.label, d.data.length])")
    assert ["held-out accuracy", 1] in legend  # the closing evaluation is the last point
    summary = page.locator("#result-rows").inner_text()
    assert "held-out accuracy" in summary
    screenshot(page, "32-reward-model-job-page")


def test_a_job_shows_total_stage_and_eta_before_its_first_step(page, make_user, project, screenshot):
    """A PPO job as a worker has just picked it up: the model is still loading, nothing measured."""
    from training.models import TrainingJob
    from training.services.jobs import training_job_launch

    earlier = _run(project, "ppo", {**PPO, "iterations": 2})
    job = training_job_launch(project=project, kind="ppo", config={**PPO, "iterations": 20})
    now = timezone.now()
    TrainingJob.objects.filter(pk=job.pk).update(state="running", started_at=now, heartbeat_at=now, progress={
        "step": 0, "total": 20, "stage": "loading model", "eta_seconds": 95.0, "eta_basis": "earlier job"})
    queued = training_job_launch(project=project, kind="generate", config={"responses_per_prompt": 3},
                                 inputs={"prompt_ids": list(project.prompts.values_list("id", flat=True)[:4])})
    make_user("ada", "admin")
    login(page, "ada")
    page.goto(f"/manage/jobs/{job.pk}")
    page.get_by_text("0 / 20 iterations").wait_for()
    assert page.locator("#stage").inner_text() == "loading model"
    assert page.locator("#progress-eta").inner_text() == "about 2 min left (from the last run)"
    assert page.locator("#progress-duration").inner_text().endswith("so far")
    screenshot(page, "33-job-loading-model")

    page.goto(f"/manage/jobs?project={project.pk}")
    rows = page.locator("#jobs tr")
    rows.first.wait_for()
    headers = page.locator("table[aria-label=Jobs] th").all_inner_texts()
    assert headers == ["Job", "Kind", "State", "Progress", "Duration", "Produced", "Created"]
    running = page.locator(f"#jobs tr[data-job='{job.pk}']").inner_text()
    assert "0 / 20" in running and "loading model" in running and "so far" in running
    waiting = page.locator(f"#jobs tr[data-job='{queued.pk}']").inner_text()
    assert "0 / 12" in waiting and "waiting for a worker" in waiting  # 4 prompts × 3 responses
    done = page.locator(f"#jobs tr[data-job='{earlier.pk}']")
    assert done.get_by_role("link", name=f"model #{earlier.outputs['model_version']}").is_visible()
    assert re.search(r"\d+ s", done.locator("td").nth(4).inner_text())
    # The version pickers are wide enough for their choices ("the promoted policy" was cut off).
    # Names are the users' own and can be long (CI's "#279 tiny-jobpage-2cd6cf (promoted)" did not fit
    # a fixed column): a picker grows with its longest choice.
    page.get_by_label("Kind").select_option("ppo")  # the kind that picks both versions
    for name in ("Start from policy", "Reward model"):
        select = page.get_by_label(name, exact=True)
        select.wait_for()
        select.evaluate("s => s.add(new Option('#1234 a-long-model-name-from-the-import-form-2cd6cf-ppo-36 (promoted)', ''))")
        fits = select.evaluate("""s => { const c = document.createElement('canvas').getContext('2d');
            c.font = getComputedStyle(s).font;
            return Math.max(...[...s.options].map(o => c.measureText(o.text).width)) + 28 <= s.clientWidth; }""")
        assert fits, (name, select.evaluate("s => [s.clientWidth, [...s.options].map(o => o.text)]"))
    screenshot(page, "34-jobs-list")
