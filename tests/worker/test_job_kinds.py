"""Every job kind runs through the same runner (in-process here; the Celery path is covered by
test_jobs.py): SFT on demonstrations, DPO on pairs, PPO with a verifiable scorer, generate."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from annotate.models import Prompt
from annotate.services.demonstrations import demonstration_create
from tests.tiny_model import build_tiny_model
from tests.worker.factories import project_with_pairs, register_policy
from worker.models import ModelVersion, TrainingJob
from worker.services.job_runner import job_run
from worker.services.jobs import training_job_launch

FAST = {"batch_size": 2, "max_steps": 2, "eval_fraction": 0.0, "precision": "fp32", "max_length": 64}


@pytest.fixture
def project_and_policy(db):
    project, annotator = project_with_pairs(slug=f"kinds-{uuid.uuid4().hex[:6]}", n_tasks=4)
    policy = register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]),
                             project=project)
    return project, annotator, policy


def _run(job: TrainingJob) -> TrainingJob:
    assert job_run(job_id=job.pk, hostname="inline@test") == "succeeded"
    job.refresh_from_db()
    return job


@pytest.mark.django_db
def test_sft_job_on_demonstrations(project_and_policy):
    project, annotator, policy = project_and_policy
    for prompt in Prompt.objects.filter(project=project):
        demonstration_create(prompt=prompt, annotator=annotator, text="four, thank you")
    job = _run(training_job_launch(project=project, kind="sft", config=FAST))
    version = ModelVersion.objects.get(pk=job.outputs["model_version"])
    assert version.kind == "policy" and list(version.parents.all()) == [policy]
    assert len(job.inputs["demonstration_ids"]) == 4 and job.metric_rows.count() == 2


@pytest.mark.django_db
def test_dpo_job_on_pairs(project_and_policy):
    project, _, policy = project_and_policy
    job = _run(training_job_launch(project=project, kind="dpo", config=FAST))
    assert ModelVersion.objects.get(pk=job.outputs["model_version"]).kind == "policy"
    assert "loss" in job.metric_rows.first().values


@pytest.mark.django_db
def test_ppo_job_with_a_verifiable_scorer(project_and_policy):
    project, _, _ = project_and_policy
    config = {"iterations": 1, "rollout_batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1,
              "precision": "fp32", "max_length": 64, "scorer": "numeric",
              "sampling": {"strategy": "top_p", "top_p": 1.0, "max_new_tokens": 4}}
    job = _run(training_job_launch(project=project, kind="ppo", config=config))
    assert job.inputs["reward_model"] is None and job.config["scorer"] == "numeric"
    assert {"kl", "score"} <= set(job.metric_rows.first().values)


@pytest.mark.django_db
def test_generate_job_makes_tasks_with_lineage(project_and_policy):
    project, _, policy = project_and_policy
    prompt = Prompt.objects.create(project=project, text="a fresh prompt")
    job = _run(training_job_launch(project=project, kind="generate", inputs={"prompt_ids": [prompt.pk]},
                                   config={"strategy": "greedy", "max_new_tokens": 4,
                                           "responses_per_prompt": 3}))
    assert job.outputs["tasks"] == 1
    task = prompt.tasks.get()
    responses = list(task.responses.all())
    assert len(responses) == 3
    assert {r.model_version_id for r in responses} == {policy.pk}
    assert responses[0].sampling["strategy"] == "greedy" and responses[0].sampling["max_new_tokens"] == 4


@pytest.mark.django_db
def test_reward_pairs_carry_their_prompt_and_margin_from_adjacent_zero(project_and_policy):
    from worker.services.job_runner import _pair_rows

    project, annotator, _ = project_and_policy
    job = training_job_launch(project=project, kind="reward_model", config=FAST)
    rows = _pair_rows(job)
    prompts = {p.pk for p in Prompt.objects.filter(project=project)}
    assert len(rows) == 4 and {r["prompt_id"] for r in rows} == prompts
    assert all(r["margin"] == 0 for r in rows)  # two groups, adjacent: the weakest preference
    assert all(r["annotator"] == annotator.username and r["chosen_id"] != r["rejected_id"] for r in rows)
