"""Nothing is lost, in the service: model names cannot reach outside their folder or overwrite a
model; every terminal job transition moves or fails its round with a reason; failed jobs and rounds
are retried; configs that train nothing are refused at launch; a lost broker message is sent again;
a job past its wall-time limit stops as failed. (In-process: no worker unless the test needs one.)"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotate.models import Prompt, Round
from annotate.services.imports import prompts_import
from annotate.services.projects import project_create
from registry.models import ModelVersion
from tests.factories import project_with_pairs, register_policy
from tests.tiny_model import build_tiny_model
from training.models import TrainingJob, WorkerHeartbeat
from training.runner import job_run
from training.services.jobs import training_job_launch
from training.services.lifecycle import (
    job_finish,
    jobs_fail_orphans,
    jobs_republish_lost,
    jobs_sweep_stale,
    round_retry,
    training_job_cancel,
    training_job_retry,
)
from training.services.rounds import round_start, rounds_advance


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    (settings.ARTIFACTS_ROOT / "base").mkdir(parents=True)
    canary = settings.ARTIFACTS_ROOT / "jobs" / "000001-ppo" / "model.safetensors"
    canary.parent.mkdir(parents=True)
    canary.write_bytes(b"weights of a trained model")
    return settings.ARTIFACTS_ROOT


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["..", ".", "a/b", "../jobs", "", "-x", ".hidden", "a..b", "x" * 101, "é"])
def test_an_import_name_never_reaches_outside_its_folder(admin_client, artifacts, tmp_path, name):
    source = build_tiny_model(tmp_path / "incoming" / "src")
    before = _digest(artifacts)
    response = admin_client.post("/api/models/import", {"source": str(source), "name": name}, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] in ("invalid_name", "validation_error") and "name" in error["details"]
    assert _digest(artifacts) == before and not ModelVersion.objects.exists()
    with pytest.raises(CommandError, match="invalid model name"):
        call_command("import_model", str(source), f"--name={name or '/'}")


@pytest.mark.django_db
def test_an_existing_model_is_never_overwritten_by_an_import(admin_client, artifacts, tmp_path):
    first = build_tiny_model(tmp_path / "incoming" / "first", seed=1)
    body = admin_client.post("/api/models/import", {"source": str(first), "name": "mine"}, format="json").json()
    kept = _digest(artifacts / body["path"])
    version = ModelVersion.objects.get(pk=body["id"])
    other = build_tiny_model(tmp_path / "incoming" / "other", seed=2)
    clash = admin_client.post("/api/models/import", {"source": str(other), "name": "mine"}, format="json")
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "name_taken"
    assert _digest(artifacts / body["path"]) == kept and ModelVersion.objects.get(pk=version.pk).sha256 == version.sha256
    again = admin_client.post("/api/models/import", {"source": str(first), "name": "mine"}, format="json")
    assert again.status_code == 201 and again.json()["id"] == version.pk  # the same import is idempotent
    # A default name from the source folder gets a directory of its own when that folder is taken.
    (artifacts / "base" / "other").mkdir()
    unnamed = admin_client.post("/api/models/import", {"source": str(other)}, format="json").json()
    assert unnamed["name"] == "other" and unnamed["path"] == "base/other-2"
    assert list((artifacts / "base" / "other").iterdir()) == []


def _round_project(slug: str):
    project = project_create(name=slug, slug=slug)
    prompts_import(project=project, lines=[json.dumps({"prompt": f"say {i}"}) for i in range(3)])
    from django.conf import settings

    policy = register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]),
                             project=project)
    return project, policy


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["fails", "cancelled", "stale", "orphan"])
def test_a_round_whose_generate_job_ends_badly_fails_with_the_reason(how, settings):
    project, _ = _round_project(f"stuck-{how}")
    round_obj, job = round_start(project=project, prompts="unused", sampling={"max_new_tokens": 4})
    assert Round.objects.get(pk=round_obj.pk).status == "generating"
    if how == "fails":
        job_finish(job_id=job.pk, state="failed", error="RuntimeError: out of memory")
        expected = "out of memory"
    elif how == "cancelled":
        training_job_cancel(job=job)
        expected = "cancelled"
    else:
        settings.RLHF_JOB_MAX_ATTEMPTS = 1
        TrainingJob.objects.filter(pk=job.pk).update(state="running", attempts=1, worker_hostname="w1@host",
                                                     heartbeat_at=timezone.now() - timedelta(minutes=10))
        if how == "stale":
            assert jobs_sweep_stale() == [job.pk]
            expected = "stopped sending heartbeats"
        else:
            assert jobs_fail_orphans(hostname="w1@host") == [job.pk]
            expected = "restarted while the job was running"
    round_obj = Round.objects.get(pk=round_obj.pk)
    assert round_obj.status == "failed" and round_obj.failed_stage == "generating"
    assert f"generate job #{job.pk}" in round_obj.reason and expected in round_obj.reason
    # Retried, the round goes back to generating with the same job, which resumes.
    retried = round_retry(round_obj=round_obj)
    assert retried.status == "generating" and retried.stage_job_id == job.pk and not retried.reason
    assert TrainingJob.objects.get(pk=job.pk).state == "queued"
    assert job.log_lines.filter(message__contains="continues from its last saved state").exists()


@pytest.mark.django_db
def test_a_self_running_round_moves_through_its_stages_and_fails_where_a_job_dies(settings):
    project, policy = project_with_pairs(slug="stages", n_tasks=3)[0], None
    policy = register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]),
                             project=project)
    Prompt.objects.create(project=project, text="a new prompt")
    round_obj, gen = round_start(project=project, prompts="unused", sampling={"max_new_tokens": 4},
                                 auto={"enabled": True})
    job_finish(job_id=gen.pk, state="succeeded", outputs={"tasks": 0})
    assert Round.objects.get(pk=round_obj.pk).status == "annotating"
    # No tasks in the round yet: it is not complete, so nothing starts.
    assert rounds_advance() == []
    from annotate.models import RankingTask

    RankingTask.objects.filter(project=project).update(round=round_obj)
    assert rounds_advance() == [round_obj.pk]
    round_obj = Round.objects.get(pk=round_obj.pk)
    rm_job = TrainingJob.objects.get(pk=round_obj.stage_job_id)
    assert round_obj.status == "reward_model" and rm_job.kind == "reward_model"
    # The reward model dies with its worker; no run is left: the round fails, naming the job.
    settings.RLHF_JOB_MAX_ATTEMPTS = 1
    TrainingJob.objects.filter(pk=rm_job.pk).update(state="running", attempts=1,
                                                    heartbeat_at=timezone.now() - timedelta(minutes=5))
    jobs_sweep_stale()
    round_obj = Round.objects.get(pk=round_obj.pk)
    assert (round_obj.status, round_obj.failed_stage) == ("failed", "reward_model")
    assert f"reward_model job #{rm_job.pk} failed" in round_obj.reason
    # Relaunching the job itself (not the round) takes the round back too.
    training_job_retry(job=rm_job)
    assert Round.objects.get(pk=round_obj.pk).status == "reward_model"
    # It succeeds: PPO starts on its model, then evaluation, then promotion closes the round.
    rm_version = ModelVersion.objects.create(name="rm", kind="reward", path="x/rm", source="job", project=project)
    TrainingJob.objects.filter(pk=rm_job.pk).update(state="running")
    job_finish(job_id=rm_job.pk, state="succeeded", outputs={"model_version": rm_version.pk})
    round_obj = Round.objects.get(pk=round_obj.pk)
    ppo = TrainingJob.objects.get(pk=round_obj.stage_job_id)
    assert round_obj.status == "policy" and ppo.kind == "ppo" and ppo.inputs["reward_model"] == rm_version.pk
    candidate = ModelVersion.objects.create(name="cand", kind="policy", path="x/cand", source="job", project=project)
    job_finish(job_id=ppo.pk, state="succeeded", outputs={"model_version": candidate.pk})
    round_obj = Round.objects.get(pk=round_obj.pk)
    evaluate = TrainingJob.objects.get(pk=round_obj.stage_job_id)
    assert round_obj.status == "evaluating" and evaluate.kind == "evaluate"
    assert evaluate.inputs["candidate"] == candidate.pk and evaluate.inputs["policy"] == policy.pk
    job_finish(job_id=evaluate.pk, state="succeeded", outputs={"candidate": candidate.pk,
                                                               "evaluation": {"win_rate": 0.75}})
    round_obj = Round.objects.get(pk=round_obj.pk)
    assert round_obj.status == "closed" and round_obj.settings["auto"]["evaluation"] == {"win_rate": 0.75}
    assert ModelVersion.objects.get(pk=candidate.pk).promoted


@pytest.mark.django_db
def test_a_stage_that_cannot_start_fails_the_round_and_retry_starts_it_again(settings):
    project, _ = _round_project("no-pairs")
    round_obj, gen = round_start(project=project, prompts="unused", sampling={"max_new_tokens": 4},
                                 auto={"enabled": True})
    job_finish(job_id=gen.pk, state="succeeded", outputs={})
    from annotate.services.leases import task_lease_next
    from annotate.services.rankings import ranking_submit
    from annotate.services.tasks import tasks_create
    from annotate.services.users import user_create

    tasks_create(project=project, prompt=Prompt.objects.filter(project=project).first(), round=round_obj,
                 responses=[{"text": "a"}, {"text": "b"}])
    annotator = user_create(username="tie-ann", password="annotator-pass-1")
    lease = task_lease_next(project=project, annotator=annotator)
    ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=annotator,
                   groups=[[r.pk for r in lease.task.responses.all()]])  # a tie: no pair
    rounds_advance()  # every task is ranked but there is no pair: the reward model cannot start
    round_obj = Round.objects.get(pk=round_obj.pk)
    assert round_obj.status == "failed" and "no ranked pairs" in round_obj.reason
    assert round_retry(round_obj=round_obj).status == "annotating"


@pytest.mark.django_db
def test_job_retry_through_the_api(admin_client):
    project, _ = _round_project("retry-api")
    job = training_job_launch(project=project, kind="generate", config={"max_new_tokens": 4},
                              inputs={"prompt_ids": list(Prompt.objects.values_list("id", flat=True))})
    assert admin_client.post(f"/api/jobs/{job.pk}/retry").status_code == 409  # queued: nothing to retry
    job_finish(job_id=job.pk, state="failed", error="boom")
    response = admin_client.post(f"/api/jobs/{job.pk}/retry")
    assert response.status_code == 202 and response.json()["state"] == "queued"
    assert response.json()["error"] == "" and response.json()["inputs"]["prompt_count"] == 3
    assert TrainingJob.objects.get(pk=job.pk).output_path == job.output_path


@pytest.mark.django_db
@pytest.mark.parametrize("kind, config, field", [
    ("reward_model", {"epochs": -3}, "epochs"), ("reward_model", {"epochs": 0}, "epochs"),
    ("reward_model", {"learning_rate": -1e-5}, "learning_rate"), ("reward_model", {"batch_size": 0}, "batch_size"),
    ("reward_model", {"loss": "nope"}, "loss"), ("ppo", {"iterations": 0, "scorer": "numeric"}, "iterations"),
    ("ppo", {"iterations": 10**12, "scorer": "numeric"}, "iterations"),
    ("generate", {"max_new_tokens": 10**9}, "max_new_tokens"),
])
def test_a_job_that_cannot_do_anything_is_refused_at_launch(admin_client, kind, config, field, settings):
    project, _ = project_with_pairs(slug=f"range-{uuid.uuid4().hex[:6]}", n_tasks=2)
    register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]), project=project)
    inputs = {"prompt_ids": list(Prompt.objects.filter(project=project).values_list("id", flat=True))} \
        if kind == "generate" else {}
    response = admin_client.post(f"/api/projects/{project.pk}/jobs", {"kind": kind, "config": config,
                                                                     "inputs": inputs}, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["details"] and field in response.json()["error"]["message"]
    assert not TrainingJob.objects.exists() and not ModelVersion.objects.filter(job__isnull=False).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("prompt_ids", [5, "abc", [], ["1"], [True], "other-project"])
def test_prompt_ids_are_checked_at_launch(admin_client, prompt_ids):
    project, _ = _round_project(f"ids-{uuid.uuid4().hex[:6]}")
    other, _ = _round_project(f"other-{uuid.uuid4().hex[:6]}")
    if prompt_ids == "other-project":
        prompt_ids = list(Prompt.objects.filter(project=other).values_list("id", flat=True))
    response = admin_client.post(f"/api/projects/{project.pk}/jobs",
                                 {"kind": "generate", "inputs": {"prompt_ids": prompt_ids}}, format="json")
    assert response.status_code == 400 and "prompt_ids" in response.json()["error"]["details"]


@pytest.mark.django_db
def test_a_lost_message_is_published_again_when_a_worker_sits_idle(monkeypatch):
    project, _ = _round_project("lost-message")
    sent = []
    monkeypatch.setattr("training.services.lifecycle.enqueue", lambda job_id: sent.append(job_id))
    job = training_job_launch(project=project, kind="generate", config={"max_new_tokens": 4},
                              inputs={"prompt_ids": list(Prompt.objects.values_list("id", flat=True))})
    now = timezone.now()
    TrainingJob.objects.filter(pk=job.pk).update(enqueued_at=now - timedelta(minutes=2))
    WorkerHeartbeat.objects.create(hostname="busy@h", queues=["gpu"], pid=1, started_at=now, last_seen=now,
                                   current_job_id=999)
    assert jobs_republish_lost(now=now) == []  # a busy worker explains the wait
    WorkerHeartbeat.objects.create(hostname="idle@h", queues=["default"], pid=2, started_at=now, last_seen=now,
                                   idle_since=now - timedelta(minutes=5))
    assert jobs_republish_lost(now=now) == []  # an idle worker of another queue does not
    WorkerHeartbeat.objects.create(hostname="gpu@h", queues=["default", "gpu"], pid=3, started_at=now,
                                   last_seen=now, idle_since=now - timedelta(minutes=5))
    assert jobs_republish_lost(now=now) == [job.pk] and sent == [job.pk]
    assert job.log_lines.filter(message__contains="message was lost").exists()


@pytest.mark.django_db
def test_a_job_past_its_wall_time_limit_stops_as_failed(settings):
    project, _ = project_with_pairs(slug="time-limit", n_tasks=2)
    register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]), project=project)
    job = training_job_launch(project=project, kind="reward_model", time_limit_seconds=10,
                              config={"epochs": 10_000, "batch_size": 1, "precision": "fp32", "max_length": 64,
                                      "eval_fraction": 0.0})
    TrainingJob.objects.filter(pk=job.pk).update(time_limit_seconds=1)  # below the API's minimum, for speed
    assert job_run(job_id=job.pk, hostname="inline@test") == "failed"
    job.refresh_from_db()
    assert job.state == "failed" and "wall-time limit of 1 s" in job.error
    assert job.metric_rows.exists() and not ModelVersion.objects.filter(job=job).exists()
