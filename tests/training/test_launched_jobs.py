"""Training jobs on several processes, through a real Celery worker and the job row: the worker runs
the stage as an `accelerate launch` of two processes (DDP on CPU) and still reports its progress and
global metrics; a cancel reaches every rank through the stop file and keeps the state, and the
relaunch may take another number of processes; a launch killed outright fails its job with the last
lines of its output, and the relaunch resumes from the last periodic state and registers one model."""

from __future__ import annotations

import os
import re
import signal
import uuid

import pytest
from django.conf import settings

from annotate.models import Prompt
from annotate.services.demonstrations import demonstration_create
from registry.models import ModelVersion
from tests.factories import project_with_pairs, register_policy
from tests.factories import wait_for_job as _wait
from tests.tiny_model import build_tiny_model
from training.models import TrainingJob

pytestmark = pytest.mark.slow
# 40 iterations: on a quiet machine 10 of them all ran in the time a cancel takes to land.
PPO = {"iterations": 40, "rollout_batch_size": 8, "mini_batch_size": 4, "ppo_epochs": 2, "learning_rate": 1e-3,
       "precision": "fp32", "max_length": 64, "save_every": 1, "seed": 3, "processes": 2,
       "scorer": {"scorer": "contains", "text": "yes"},
       "sampling": {"strategy": "multinomial", "temperature": 1.0, "max_new_tokens": 6}}
SFT = {"batch_size": 2, "epochs": 60, "eval_fraction": 0.0, "precision": "fp32", "max_length": 64, "save_every": 5,
       "learning_rate": 1e-3, "processes": 2, "accelerate_config": "ddp_cpu"}


def _project(slug: str):
    project, annotator = project_with_pairs(slug=f"{slug}-{uuid.uuid4().hex[:6]}", n_tasks=4)
    register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]), project=project)
    return project, annotator


def _launch(client, project, kind: str, config: dict) -> int:
    response = client.post(f"/api/projects/{project.pk}/jobs", {"kind": kind, "config": config}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def _series(job: TrainingJob) -> list[dict]:
    return [{"step": step, **values} for step, values in job.metric_rows.order_by("step", "id")
            .values_list("step", "values") if "loss" in values or "score" in values]


def test_a_ppo_job_on_two_processes_is_cancelled_and_resumed_on_one(celery_worker, admin_client):
    project, _ = _project("launched-ppo")
    job_id = _launch(admin_client, project, "ppo", PPO)
    _wait(job_id, lambda j: (j.progress.get("step") or 0) >= 1, 240, "its first iteration")
    assert admin_client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
    job = _wait(job_id, lambda j: j.is_final, 120, "cancelled")
    assert job.state == "cancelled", job.error
    logs = list(job.log_lines.values_list("message", flat=True))
    assert any("launched 2 processes with accelerate config ddp_cpu" in m for m in logs)
    assert any("stop asked of the launched processes" in m for m in logs)
    before = _series(job)
    n = PPO["iterations"]
    assert 1 <= len(before) < n
    assert all(m["processes"] == 2 and m["batch_size"] == 8 for m in before), "global metrics from rank 0"
    assert not (settings.ARTIFACTS_ROOT / job.output_path).exists()
    # Relaunched on one process, inside the worker: a DDP state holds whole weights.
    response = admin_client.post(f"/api/jobs/{job_id}/retry", {"processes": 1}, format="json")
    assert response.status_code == 202, response.json()
    bad = admin_client.post(f"/api/jobs/{job_id}/retry", {"processes": 0}, format="json")
    assert bad.status_code in (400, 409) and "error" in bad.json()
    job = _wait(job_id, lambda j: j.is_final, 240, "the end of the resumed run")
    assert job.state == "succeeded", job.error
    series = _series(job)
    assert [m["step"] for m in series] == list(range(1, n + 1)), "one series, every iteration once"
    assert [m["processes"] for m in series] == [2] * len(before) + [1] * (n - len(before))
    assert [m["samples_seen"] for m in series] == [8 * i for i in range(1, n + 1)]
    assert ModelVersion.objects.filter(job=job).count() == 1


def test_a_killed_launch_fails_its_job_with_its_last_lines_and_the_relaunch_finishes(celery_worker, admin_client):
    project, annotator = _project("launched-sft")
    for prompt in Prompt.objects.filter(project=project):
        demonstration_create(prompt=prompt, annotator=annotator, text="four, thank you")
    job_id = _launch(admin_client, project, "sft", SFT)
    job = _wait(job_id, lambda j: (j.progress.get("step") or 0) >= 2, 240, "step 2")
    launched = next(m for m in job.log_lines.values_list("message", flat=True) if "launched 2 processes" in m)
    os.killpg(int(re.search(r"pid (\d+)", launched).group(1)), signal.SIGKILL)  # the launcher and both ranks
    job = _wait(job_id, lambda j: j.is_final, 60, "failed")
    assert job.state == "failed", list(job.log_lines.values_list("message", flat=True))
    assert "the launched processes failed (exit code -9)" in job.error and "last lines of their output" in job.error
    assert '"step": 2' in job.error or "step" in job.error, job.error
    killed_at = job.progress["step"]
    assert admin_client.post(f"/api/jobs/{job_id}/retry").status_code == 202
    job = _wait(job_id, lambda j: j.is_final, 300, "the end of the relaunch")
    assert job.state == "succeeded", job.error
    steps = [m["step"] for m in _series(job)]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] > killed_at, "one series, resumed, not restarted"
    assert job.attempts == 2 and ModelVersion.objects.filter(job=job).count() == 1
    version = ModelVersion.objects.get(job=job)
    assert version.metrics["processes"] == 2 and version.metrics["batch_size"] == 2


@pytest.mark.parametrize("config, field", [({"processes": 0}, "processes"), ({"processes": "2"}, "processes"),
                                           ({"accelerate_config": "mpi"}, "accelerate_config")])
def test_launch_fields_are_checked_like_the_rest_of_the_config(config, field):
    from config.errors import ApplicationError
    from training.kinds import config_validate

    with pytest.raises(ApplicationError) as caught:
        config_validate("reward_model", config)
    assert field in caught.value.details
    assert config_validate("dpo", {"processes": 4, "accelerate_config": "fsdp"})["processes"] == 4
    assert config_validate("sft", {})["processes"] == 1 and config_validate("ppo", {})["accelerate_config"] is None
