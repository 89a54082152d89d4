"""With real worker processes: a worker killed in the middle of PPO loses nothing (the job resumes on
the next worker from its last saved state and ends exactly where an uninterrupted run ends), and a
cancel stops a long decode within seconds."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
import torch
from django.conf import settings

from annotate.models import RankingTask
from registry.models import ModelVersion
from tests.factories import project_with_pairs, register_policy
from tests.factories import wait_for_job as _wait
from tests.tiny_model import build_tiny_model
from training.models import TrainingJob

PPO = {"iterations": 12, "rollout_batch_size": 16, "mini_batch_size": 4, "ppo_epochs": 4, "learning_rate": 1e-3,
       "precision": "fp32", "max_length": 64, "save_every": 4, "seed": 3, "scorer": {"scorer": "contains", "text": "yes"},
       "sampling": {"strategy": "multinomial", "temperature": 1.0, "max_new_tokens": 12}}


def _weights(version: ModelVersion) -> dict[str, torch.Tensor]:
    from rlhf.models import load_policy

    return load_policy(settings.ARTIFACTS_ROOT / version.path)[0].state_dict()


@pytest.mark.slow
def test_a_worker_killed_mid_ppo_loses_nothing(celery_worker, admin_client, tmp_path):
    from tests.conftest import start_worker

    project, _ = project_with_pairs(slug="resume-ppo", n_tasks=4)
    register_policy(build_tiny_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8]), project=project)

    def launch() -> int:
        response = admin_client.post(f"/api/projects/{project.pk}/jobs", {"kind": "ppo", "config": PPO}, format="json")
        assert response.status_code == 202, response.json()
        return response.json()["id"]

    straight = _wait(launch(), lambda j: j.is_final, 900, "the end of the uninterrupted run")
    assert straight.state == "succeeded", straight.error

    job_id = launch()
    # Past the state saved after iteration 4, before the end: kill the worker outright.
    _wait(job_id, lambda j: 5 <= (j.progress.get("step") or 0) < 12, 900, "iteration 5")
    celery_worker.stop(sig=signal.SIGKILL)
    assert TrainingJob.objects.get(pk=job_id).state == "running"
    successor = start_worker(tmp_path, extra_env={"RLHF_JOB_STALE_SECONDS": "5"})
    try:
        resumed = _wait(job_id, lambda j: j.is_final, 900, "the end of the resumed run")
    finally:
        successor.stop()
    assert resumed.state == "succeeded", resumed.error
    assert resumed.attempts == 2 and resumed.worker_hostname == successor.hostname
    assert resumed.log_lines.filter(message__contains="resuming from its last saved state").exists()
    # One metric series, every iteration once, equal to the uninterrupted run's.
    steps = list(resumed.metric_rows.order_by("step").values_list("step", flat=True))
    assert steps == list(range(1, 13))
    scores = [v["score"] for v in resumed.metric_rows.order_by("step").values_list("values", flat=True)]
    expected = [v["score"] for v in straight.metric_rows.order_by("step").values_list("values", flat=True)]
    assert scores == pytest.approx(expected, abs=1e-5)
    a = _weights(ModelVersion.objects.get(job=straight))
    b = _weights(ModelVersion.objects.get(job=resumed))
    for name, tensor in a.items():
        assert torch.allclose(tensor, b[name], atol=1e-5), name
    assert ModelVersion.objects.filter(job=resumed).count() == 1


def _never_stopping_model(path):
    """A tiny model whose EOS is a token it cannot produce (added to the tokenizer after the model
    was built), so a decode runs to max_new_tokens: the case where only an in-decode check helps."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    build_tiny_model(path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"additional_special_tokens": ["<|never|>"]})
    tok.eos_token = "<|never|>"
    tok.save_pretrained(path)
    model = LlamaForCausalLM.from_pretrained(path)
    model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    return path


@pytest.mark.slow
def test_cancel_stops_a_long_decode_within_seconds(celery_worker, admin_client):
    project, _ = project_with_pairs(slug="cancel-decode", n_tasks=2)
    policy_dir = _never_stopping_model(settings.ARTIFACTS_ROOT / "test-base" / uuid.uuid4().hex[:8])
    register_policy(policy_dir, project=project)
    prompt_ids = list(project.prompts.values_list("id", flat=True))
    tasks_before = RankingTask.objects.filter(project=project).count()
    response = admin_client.post(f"/api/projects/{project.pk}/jobs", {
        "kind": "generate", "inputs": {"prompt_ids": prompt_ids},
        "config": {"strategy": "greedy", "max_new_tokens": 20000, "responses_per_prompt": 2}}, format="json")
    job_id = response.json()["id"]
    _wait(job_id, lambda j: j.progress.get("stage") == "generating", 60, "generating")
    time.sleep(1)  # well into the decode of the first (and only) batch
    asked = time.monotonic()
    assert admin_client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
    job = _wait(job_id, lambda j: j.is_final, 30, "cancelled")
    took = time.monotonic() - asked
    assert job.state == "cancelled" and took < 5, f"cancel took {took:.1f} s"
    assert RankingTask.objects.filter(project=project).count() == tasks_before  # the batch in flight is dropped

