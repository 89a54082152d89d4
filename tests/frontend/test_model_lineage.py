"""The models page as a lineage: each project's policy history (base → SFT → PPO 1 → PPO 2) is the
main line with the reward model and data beside each step, a DPO try hangs under the step it came
from, "Roll back" is offered only for versions that were served, and versions can be archived
(hidden, kept) and brought back."""

from __future__ import annotations

import pytest

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _version(project, name, kind="policy", parents=(), job=None, **kw):
    from registry.models import ModelVersion
    from training.models import TrainingJob

    made = None
    if job:
        made = TrainingJob.objects.create(project=project, kind=job[0], state="succeeded", outputs={"examples": job[1]})
    v = ModelVersion.objects.create(name=name, kind=kind, path=f"x/{name}", source="base:HuggingFaceTB/SmolLM2"
                                    if not job else f"job:{made.pk}", project=project, job=made, **kw)
    v.parents.set(parents)
    return v


def test_policy_history_is_the_main_line_with_rollback_and_archive(page, make_user, screenshot):
    from annotate.services.projects import project_create
    from registry.models import ModelPromotion, ModelVersion
    from registry.services import model_version_promote

    make_user("ada", "admin")
    project = project_create(name="Helpful assistant")
    base = _version(None, "smollm2-base")
    model_version_promote(version=base, project=project)
    sft = _version(project, "helpful-sft-2", parents=[base], job=("sft", 40))
    rm = _version(project, "helpful-rm-3", kind="reward", parents=[sft], job=("reward_model", 120),
                  metrics={"eval_accuracy": 0.81, "loss": 0.52})
    ppo1 = _version(project, "helpful-ppo-4", parents=[sft, rm], job=("ppo", 30), metrics={"reward": 0.4, "kl": 0.02})
    model_version_promote(version=ppo1)
    rm2 = _version(project, "helpful-rm-5", kind="reward", parents=[sft], job=("reward_model", 260))
    ppo2 = _version(project, "helpful-ppo-6", parents=[ppo1, rm2], job=("ppo", 30))
    model_version_promote(version=ppo2)
    dpo = _version(project, "helpful-dpo-7", parents=[sft], job=("dpo", 120))
    attic = _version(project, "helpful-sft-old", parents=[base], archived_at=base.created_at)

    login(page, "ada")
    page.goto("/manage/models")
    history = page.get_by_role("list", name="Policy history of Helpful assistant")
    history.wait_for()
    line = history.locator(":scope > li > .node").evaluate_all("els => els.map(e => Number(e.dataset.model))")
    assert line == [base.pk, sft.pk, ppo1.pk, ppo2.pk]
    step = lambda v: page.locator(f"#model-{v.pk}")  # noqa: E731
    assert f"reward model: #{rm.pk} helpful-rm-3" in step(ppo1).inner_text()
    assert "reward model on 120 pairs" in step(ppo1).inner_text() and "held-out accuracy 0.81" in step(ppo1).inner_text()
    assert f"#{rm2.pk} helpful-rm-5" in step(ppo2).inner_text()
    assert "PPO on 30 prompts" in step(ppo2).inner_text() and "SFT on 40 demonstrations" in step(sft).inner_text()
    assert "served now" in step(ppo2).inner_text() and "served since" in step(ppo2).inner_text()
    # Roll back only to what was served; the SFT model and the DPO try were never served.
    assert step(base).get_by_role("button", name=f"Roll back to #{base.pk}").is_visible()
    assert step(ppo1).get_by_role("button", name=f"Roll back to #{ppo1.pk}").is_visible()
    assert step(sft).get_by_role("button", name=f"Promote #{sft.pk}").is_visible()
    assert step(ppo2).get_by_role("button").count() == 0  # served now: neither promote nor archive
    # The DPO try hangs under the SFT step, not on the main line; reward models list what used them.
    assert page.locator(f"li.step:has(> #model-{sft.pk}) ul.branches #model-{dpo.pk}").count() == 1
    assert step(dpo).get_by_role("button", name=f"Promote #{dpo.pk}").is_visible()
    rewards = page.get_by_role("list", name="Reward models of Helpful assistant")
    assert f"used by #{ppo1.pk}" in rewards.locator(f"#model-{rm.pk}").inner_text()
    assert page.locator(f"#model-{attic.pk}").count() == 0  # archived: hidden
    screenshot(page, "70-models-lineage")

    page.once("dialog", lambda d: d.accept())
    step(dpo).get_by_role("button", name="Archive").click()
    page.locator(f"#model-{dpo.pk}").wait_for(state="detached")
    assert ModelVersion.objects.get(pk=dpo.pk).archived_at is not None

    page.get_by_label("Show archived versions").check()
    page.locator(f"#model-{attic.pk}").wait_for()
    assert "archived" in step(attic).inner_text()
    step(dpo).get_by_role("button", name=f"Unarchive #{dpo.pk}").click()
    page.get_by_text("helpful-dpo-7 unarchived").wait_for()
    assert ModelVersion.objects.get(pk=dpo.pk).archived_at is None
    screenshot(page, "71-models-archived-shown")

    page.once("dialog", lambda d: d.accept())
    step(ppo1).get_by_role("button", name=f"Roll back to #{ppo1.pk}").click()
    page.locator(f"#model-{ppo1.pk} .badge.promoted").wait_for()
    assert ModelVersion.objects.get(promoted=True, project=project).pk == ppo1.pk
    assert ModelPromotion.objects.filter(project=project).order_by("id").last().rollback is True
    # The history follows what is served: the line now ends at PPO 1, PPO 2 is a branch of it.
    line = history.locator(":scope > li > .node").evaluate_all("els => els.map(e => Number(e.dataset.model))")
    assert line == [base.pk, sft.pk, ppo1.pk]
    assert step(ppo2).get_by_role("button", name=f"Roll back to #{ppo2.pk}").is_visible()
    screenshot(page, "72-models-rolled-back")
