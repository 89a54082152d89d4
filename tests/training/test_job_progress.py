"""What a job's progress says while it runs, for every kind: a total from the moment it is queued,
a stage label from the first write (loading model, then the kind's own stages), and an ETA that
comes from an earlier job of the same kind until this run has timed a step of its own."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from annotate.models import Prompt
from annotate.services.demonstrations import demonstration_create
from tests.factories import project_with_pairs, register_policy
from tests.tiny_model import build_tiny_model
from training.models import TrainingJob
from training.reporter import JobReporter
from training.runner import job_run
from training.services.jobs import training_job_launch

FAST = {"batch_size": 2, "max_steps": 2, "eval_fraction": 0.0, "precision": "fp32", "max_length": 64}
PPO = {"iterations": 2, "rollout_batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1, "precision": "fp32",
       "max_length": 64, "scorer": "numeric", "sampling": {"strategy": "top_p", "top_p": 1.0, "max_new_tokens": 3}}


@pytest.fixture
def project(db):
    project, annotator = project_with_pairs(slug=f"progress-{uuid.uuid4().hex[:6]}", n_tasks=4)
    register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]), project=project)
    for prompt in Prompt.objects.filter(project=project):
        demonstration_create(prompt=prompt, annotator=annotator, text="four, thank you")
    return project


@pytest.fixture
def writes(monkeypatch):
    """Every progress dict the reporter wrote, in order."""
    seen: list[dict] = []
    write, on_step = JobReporter._write, JobReporter.on_step

    def spy_write(self):
        seen.append(dict(self.progress))
        write(self)

    def spy_step(self, metrics):
        on_step(self, metrics)
        seen.append(dict(self.progress))

    monkeypatch.setattr(JobReporter, "_write", spy_write)
    monkeypatch.setattr(JobReporter, "on_step", spy_step)
    return seen


def _first_seen(progress: list[dict]) -> list[str]:
    order: list[str] = []
    for p in progress:
        if p["stage"] not in order:
            order.append(p["stage"])
    return order


def _run(job: TrainingJob) -> TrainingJob:
    assert job_run(job_id=job.pk, hostname="inline@test") == "succeeded"
    job.refresh_from_db()
    return job


@pytest.mark.django_db
@pytest.mark.parametrize("kind, config, total, stages", [
    ("ppo", PPO, 2, ["loading model", "generating", "scoring", "updating", "saving"]),
    ("sft", FAST, 2, ["loading model", "training", "evaluating", "saving"]),
    ("reward_model", FAST, 2, ["loading model", "training", "evaluating", "saving"]),
    ("dpo", FAST, 2, ["loading model", "training", "evaluating", "saving"]),
])
def test_every_training_kind_reports_its_total_and_stages_from_the_first_write(project, writes, kind, config,
                                                                                total, stages):
    job = training_job_launch(project=project, kind=kind, config=config)
    assert job.progress["total"] == total and job.progress["stage"] == "queued"
    job = _run(job)
    assert writes, "the reporter wrote nothing"
    assert all(p["total"] == total for p in writes), writes
    assert _first_seen(writes) == stages
    assert job.progress["step"] == total
    # Once a step is timed the ETA is this run's own; the last write says none is left.
    stepped = [p for p in writes if p["eta_basis"] == "this run"]
    assert stepped and stepped[-1]["eta_seconds"] == 0


@pytest.mark.django_db
def test_generate_counts_responses_prompts_times_n(project, writes):
    prompts = [Prompt.objects.create(project=project, text=f"fresh prompt {i}").pk for i in range(3)]
    job = training_job_launch(project=project, kind="generate", inputs={"prompt_ids": prompts},
                              config={"strategy": "greedy", "max_new_tokens": 3, "responses_per_prompt": 2,
                                      "batch_size": 2})
    assert job.progress["total"] == 6
    job = _run(job)
    assert all(p["total"] == 6 for p in writes)
    assert _first_seen(writes) == ["loading model", "generating"]
    assert [p["step"] for p in writes if p["eta_basis"] == "this run"] == [4, 6]
    assert job.progress["step"] == 6
    # Each response says how it ended; 3 new tokens from a random tiny model end at the limit.
    from annotate.models import Response

    reasons = list(Response.objects.filter(prompt_id__in=prompts).values_list("sampling", flat=True))
    assert len(reasons) == 6 and all(r["finish_reason"] in ("stop", "length") for r in reasons)
    assert any(r["finish_reason"] == "length" for r in reasons)


@pytest.mark.django_db
def test_eta_comes_from_an_earlier_job_of_the_same_kind_before_the_first_step(project, writes):
    _run(training_job_launch(project=project, kind="sft", config=FAST))
    writes.clear()
    _run(training_job_launch(project=project, kind="sft", config={**FAST, "max_steps": 4}))
    first = writes[0]
    assert first["stage"] == "loading model" and first["eta_basis"] == "earlier job"
    assert first["eta_seconds"] is not None and first["eta_seconds"] > 0


@pytest.mark.django_db
def test_the_eta_counts_the_steps_of_a_first_report_that_covers_several(project):
    """A generate job reports once a batch is done (step 32 of 192 at its first report): 32 done in
    100 s leaves 160 at the same pace, 500 s; counting the first report as one step said 16,000 s."""
    import time

    job = training_job_launch(project=project, kind="sft", config=FAST)
    reporter = JobReporter(job)
    reporter.work_started = time.monotonic() - 100
    reporter.on_step({"step": 32, "total": 192})
    assert reporter.progress["eta_seconds"] == pytest.approx(500, rel=0.05)
    # A resumed run (its progress says 8; it resumes after its save at step 5) counts from its save.
    job.progress = {"step": 8, "total": 10}
    resumed = JobReporter(job)
    resumed.work_started = time.monotonic() - 10
    resumed.on_step({"step": 6, "total": 10})
    assert resumed.progress["eta_seconds"] == pytest.approx(40, rel=0.05)
