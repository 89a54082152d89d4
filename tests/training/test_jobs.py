"""Training jobs through the API and a real Celery worker: validation, end to end, cancel,
a killed worker, a message delivered twice."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from registry.models import ModelVersion
from tests.factories import project_with_pairs, register_policy
from tests.tiny_model import build_tiny_model
from training.models import TrainingJob

FAST_RM = {"batch_size": 2, "max_steps": 3, "epochs": 1, "eval_fraction": 0.0, "precision": "fp32",
           "max_length": 64}


@pytest.fixture
def tiny_policy_dir():
    return build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8])


def _wait(job_id: int, states: tuple[str, ...], timeout: float = 120) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = TrainingJob.objects.get(pk=job_id)
        if job.state in states:
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout} s; logs: "
                         f"{list(job.log_lines.values_list('message', flat=True))}")


@pytest.mark.django_db
def test_launch_validates_config_naming_each_bad_field(admin_client, tiny_policy_dir):
    project, _ = project_with_pairs(slug="val")
    register_policy(tiny_policy_dir, project=project)
    response = admin_client.post(f"/api/projects/{project.pk}/jobs", {
        "kind": "reward_model", "config": {"learning_rate": "fast", "bogus": 1, "batch_size": 4}}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert set(error["details"]) == {"learning_rate", "bogus"}
    assert "must be float" in error["details"]["learning_rate"]
    assert not TrainingJob.objects.exists(), "nothing is queued when the config is bad"


@pytest.mark.django_db
def test_launch_refuses_unknown_kind_and_missing_data(admin_client, tiny_policy_dir):
    from annotate.services.projects import project_create

    empty = project_create(name="Empty", slug="empty")
    register_policy(tiny_policy_dir, project=empty)
    assert admin_client.post(f"/api/projects/{empty.pk}/jobs", {"kind": "magic"}, format="json").status_code == 400
    response = admin_client.post(f"/api/projects/{empty.pk}/jobs", {"kind": "reward_model"}, format="json")
    assert response.status_code == 400
    assert "no ranked pairs" in response.json()["error"]["message"]
    response = admin_client.post(f"/api/projects/{empty.pk}/jobs",
                                 {"kind": "sft", "inputs": {"policy": 999999}}, format="json")
    assert response.status_code == 400 and "999999 does not exist" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_jobs_api_is_admin_only(tiny_policy_dir):
    from annotate.services.projects import project_create
    from annotate.services.users import user_create

    project = project_create(name="P", slug="perm")
    annotator = user_create(username="ann-perm", password="annotator-pass-1")
    anonymous = APIClient()
    body = {"kind": "reward_model"}
    assert anonymous.post(f"/api/projects/{project.pk}/jobs", body, format="json").status_code == 401
    client = APIClient()
    client.force_authenticate(annotator)
    assert client.post(f"/api/projects/{project.pk}/jobs", body, format="json").status_code == 403
    assert client.get("/api/models").status_code == 403
    assert client.get("/api/jobs").status_code == 403


def test_reward_model_job_end_to_end(celery_worker, admin_client, tiny_policy_dir):
    project, _ = project_with_pairs(slug="e2e")
    policy = register_policy(tiny_policy_dir, project=project)
    response = admin_client.post(f"/api/projects/{project.pk}/jobs",
                                 {"kind": "reward_model", "config": FAST_RM}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["state"] == "queued" and body["inputs"]["pair_count"] == 6
    job = _wait(body["id"], ("succeeded", "failed"))
    assert job.state == "succeeded", job.error
    version = ModelVersion.objects.get(pk=job.outputs["model_version"])
    assert version.kind == "reward" and version.job_id == job.pk
    assert list(version.parents.values_list("id", flat=True)) == [policy.pk]
    assert (settings.ARTIFACTS_ROOT / version.path / "config.json").is_file()
    detail = admin_client.get(f"/api/jobs/{job.pk}").json()
    assert detail["progress"]["step"] == detail["progress"]["total"] == 3
    series = admin_client.get(f"/api/jobs/{job.pk}/metrics").json()["series"]
    assert [step for step, _ in series["loss"]] == [1, 2, 3]
    logs = admin_client.get(f"/api/jobs/{job.pk}/logs").json()["lines"]
    assert any("started on" in line["message"] for line in logs)
    models = admin_client.get(f"/api/models?project={project.pk}").json()
    assert {m["kind"] for m in models} == {"policy", "reward"}
    # The snapshot is frozen: the job keeps exactly the pair ids it trained on.
    assert len(job.inputs["pair_ids"]) == 6


def test_cancel_stops_a_running_job(celery_worker, admin_client, tiny_policy_dir):
    project, _ = project_with_pairs(slug="cancel")
    register_policy(tiny_policy_dir, project=project)
    config = {**FAST_RM, "max_steps": None, "epochs": 10000}
    job_id = admin_client.post(f"/api/projects/{project.pk}/jobs", {"kind": "reward_model", "config": config},
                               format="json").json()["id"]
    _wait(job_id, ("running",))
    deadline = time.monotonic() + 60
    while TrainingJob.objects.get(pk=job_id).progress.get("step", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert admin_client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
    job = _wait(job_id, ("cancelled", "failed", "succeeded"), timeout=60)
    assert job.state == "cancelled"
    assert not ModelVersion.objects.filter(job=job).exists()
    assert admin_client.post(f"/api/jobs/{job_id}/cancel").status_code == 409


def test_a_killed_worker_leaves_no_job_running(celery_worker, admin_client, tiny_policy_dir, tmp_path):
    """With no run left (RLHF_JOB_MAX_ATTEMPTS=1), the job of a dead worker is failed, not left
    running; tests/training/test_resume.py covers the automatic resume when runs are left."""
    from tests.conftest import start_worker

    project, _ = project_with_pairs(slug="kill")
    register_policy(tiny_policy_dir, project=project)
    config = {**FAST_RM, "max_steps": None, "epochs": 10000}
    job_id = admin_client.post(f"/api/projects/{project.pk}/jobs", {"kind": "reward_model", "config": config},
                               format="json").json()["id"]
    _wait(job_id, ("running",))
    celery_worker.stop(sig=signal.SIGKILL)
    # Another worker (on another host, say) sweeps jobs whose heartbeat stopped.
    survivor = start_worker(tmp_path, queues="default",
                            extra_env={"RLHF_JOB_STALE_SECONDS": "5", "RLHF_JOB_MAX_ATTEMPTS": "1"})
    try:
        job = _wait(job_id, ("failed", "succeeded", "cancelled"), timeout=60)
    finally:
        survivor.stop()
    assert job.state == "failed"
    assert "stopped sending heartbeats" in job.error
    assert job.log_lines.filter(message__contains="relaunch it to continue").exists()


def test_a_message_delivered_twice_trains_once(celery_worker, admin_client, tiny_policy_dir):
    from training.tasks import run_job

    project, _ = project_with_pairs(slug="twice")
    register_policy(tiny_policy_dir, project=project)
    job_id = admin_client.post(f"/api/projects/{project.pk}/jobs", {"kind": "reward_model", "config": FAST_RM},
                               format="json").json()["id"]
    run_job.apply_async(args=[job_id], queue="gpu")  # the broker redelivers the same message
    job = _wait(job_id, ("succeeded", "failed"))
    assert job.state == "succeeded", job.error
    deadline = time.monotonic() + 30
    while not job.log_lines.filter(message__contains="ignored").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.log_lines.filter(message__contains="ignored").count() == 1
    assert ModelVersion.objects.filter(job=job).count() == 1
    assert TrainingJob.objects.get(pk=job_id).attempts == 1


def test_two_workers_share_the_gpu_queue_one_job_each(celery_worker, admin_client, tiny_policy_dir, tmp_path):
    """Several workers (hosts) consume the same queue; each runs one GPU job at a time."""
    from tests.conftest import start_worker

    project, _ = project_with_pairs(slug="two-workers")
    register_policy(tiny_policy_dir, project=project)
    second = start_worker(tmp_path)
    try:
        config = {**FAST_RM, "max_steps": None, "epochs": 10000}
        ids = [admin_client.post(f"/api/projects/{project.pk}/jobs", {"kind": "reward_model", "config": config},
                                 format="json").json()["id"] for _ in range(2)]
        jobs = [_wait(job_id, ("running",)) for job_id in ids]
        assert {job.worker_hostname for job in jobs} == {celery_worker.hostname, second.hostname}
        third = admin_client.post(f"/api/projects/{project.pk}/jobs", {"kind": "reward_model", "config": FAST_RM},
                                  format="json").json()["id"]
        time.sleep(3)
        assert TrainingJob.objects.get(pk=third).state == "queued", "no worker takes a second job at once"
        for job_id in ids:
            admin_client.post(f"/api/jobs/{job_id}/cancel")
        assert _wait(third, ("succeeded", "failed")).state == "succeeded"
    finally:
        second.stop()
