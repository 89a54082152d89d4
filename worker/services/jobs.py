"""Training job writes: launch (validate, freeze the data, enqueue on commit), cancel, the
stale-job sweep, and the progress/metrics/log records a running job makes."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.models import Project, Prompt, Round
from annotate.selectors.training import demonstration_ids, pair_ids
from config.errors import ApplicationError, Conflict, NotFound

from ..models import JobLog, JobMetric, ModelVersion, TrainingJob
from ..stages import config_validate
from .models import default_model_version

log = logging.getLogger(__name__)


def _model_input(*, project: Project, kind: str, given: int | None, label: str) -> ModelVersion | None:
    if given is not None:
        version = ModelVersion.objects.filter(pk=given).first()
        if version is None:
            raise ApplicationError(f"inputs.{label}: model version {given} does not exist", code="invalid_inputs",
                                   details={label: "not found"})
        if version.kind != kind:
            raise ApplicationError(f"inputs.{label}: model version {given} is a {version.kind} model, "
                                   f"not a {kind} model", code="invalid_inputs", details={label: "wrong kind"})
        return version
    if kind == ModelVersion.Kind.POLICY:
        return (ModelVersion.objects.filter(project=project, kind="policy", promoted=True).first()
                or default_model_version())
    return ModelVersion.objects.filter(project=project, kind="reward").order_by("-id").first()


def _snapshot(*, project: Project, kind: str, inputs: dict) -> dict:
    """Freeze exactly which rows the job trains on, so a rerun sees the same data."""
    if kind == "sft":
        ids = demonstration_ids(project=project)
        if not ids:
            raise ApplicationError("the project has no demonstrations to fine-tune on", code="no_data")
        return {"demonstration_ids": ids}
    if kind in ("reward_model", "dpo"):
        ids = pair_ids(project=project)
        if not ids:
            raise ApplicationError("the project has no ranked pairs to train on", code="no_data")
        return {"pair_ids": ids}
    if kind == "ppo":
        ids = list(Prompt.objects.filter(project=project).order_by("id").values_list("id", flat=True))
        if not ids:
            raise ApplicationError("the project has no prompts for PPO rollouts", code="no_data")
        return {"prompt_ids": ids}
    # generate: the prompts were chosen by the round (or given explicitly)
    ids = inputs.get("prompt_ids")
    if not ids:
        raise ApplicationError("a generate job needs inputs.prompt_ids", code="invalid_inputs")
    return {"prompt_ids": list(ids)}


def training_job_launch(*, project: Project, kind: str, config: dict | None = None, inputs: dict | None = None,
                        user=None, round: Round | None = None) -> TrainingJob:
    """Validate, snapshot the data, create the job and enqueue it once the transaction commits."""
    clean_config = config_validate(kind, config or {})
    inputs = dict(inputs or {})
    unknown = set(inputs) - {"policy", "reward_model", "prompt_ids"}
    if unknown:
        raise ApplicationError(f"unknown inputs: {', '.join(sorted(unknown))}", code="invalid_inputs",
                               details={k: "unknown" for k in unknown})
    for key in ("policy", "reward_model"):
        if inputs.get(key) is not None and (isinstance(inputs[key], bool) or not isinstance(inputs[key], int)):
            raise ApplicationError(f"inputs.{key} must be a model version id", code="invalid_inputs",
                                   details={key: "not an integer"})
    policy = _model_input(project=project, kind="policy", given=inputs.get("policy"), label="policy")
    if policy is None:
        raise ApplicationError("no policy to start from: promote one or import a base model", code="no_policy")
    resolved: dict = {"policy": policy.id}
    if kind == "ppo":
        reward = _model_input(project=project, kind="reward", given=inputs.get("reward_model"),
                              label="reward_model")
        if reward is None and not clean_config.get("scorer"):
            raise ApplicationError("PPO needs a reward model (train one first) or a verifiable scorer "
                                   "(config.scorer)", code="no_reward_model")
        resolved["reward_model"] = reward.id if reward is not None and not clean_config.get("scorer") else None
    if kind == "generate":
        resolved["prompt_ids"] = inputs.get("prompt_ids")
    resolved.update(_snapshot(project=project, kind=kind, inputs=resolved))
    with transaction.atomic():
        job = TrainingJob.objects.create(project=project, kind=kind, config=clean_config, inputs=resolved,
                                         created_by=user if getattr(user, "is_authenticated", False) else None,
                                         round=round, progress={"step": 0, "total": None, "eta_seconds": None})
        job_log(job=job, message=f"queued {kind} job on policy #{policy.id}")
        transaction.on_commit(lambda: _enqueue(job.id))
    return job


def _enqueue(job_id: int) -> None:
    from ..tasks import run_job

    result = run_job.apply_async(args=[job_id], queue="gpu")
    TrainingJob.objects.filter(pk=job_id).update(celery_task_id=result.id or "")


def training_job_get(*, job_id: int) -> TrainingJob:
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """A queued job is cancelled at once; a running one stops at its next step."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_final:
            raise Conflict(f"job {job.pk} already {job.state}", code="job_finished")
        job.cancel_requested = True
        fields = ["cancel_requested"]
        if job.state == TrainingJob.State.QUEUED:
            job.state = TrainingJob.State.CANCELLED
            job.finished_at = timezone.now()
            fields += ["state", "finished_at"]
        job.save(update_fields=fields)
        job_log(job=job, message="cancel requested")
    return job


def job_log(*, job: TrainingJob, message: str, level: str = "INFO") -> None:
    JobLog.objects.create(job=job, level=level, message=message[:10000])


def jobs_sweep_stale(*, now=None, stale_seconds: int | None = None) -> list[int]:
    """Mark running jobs whose heartbeat stopped as failed. We fail rather than requeue: a half-run
    stage's partial state is not trusted; the admin relaunches (PPO resumes from its checkpoint)."""
    now = now or timezone.now()
    stale_seconds = stale_seconds or settings.RLHF_JOB_STALE_SECONDS
    cutoff = now - timedelta(seconds=stale_seconds)
    stale = list(TrainingJob.objects.filter(state="running", heartbeat_at__lt=cutoff).values_list("id", flat=True))
    swept = []
    for job_id in stale:
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.state != "running" or (job.heartbeat_at and job.heartbeat_at >= cutoff):
                continue
            job.state = TrainingJob.State.FAILED
            job.error = (f"worker {job.worker_hostname or '?'} stopped sending heartbeats "
                         f"(last at {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); the job was marked failed")
            job.finished_at = now
            job.save(update_fields=["state", "error", "finished_at"])
            job_log(job=job, level="ERROR", message=job.error)
            swept.append(job_id)
    return swept


class JobReporter:
    """The on_step / should_stop pair a stage gets: writes progress, metrics and heartbeats, and
    reads the cancel flag (at most once a second, so a fast stage does not hammer the database)."""

    def __init__(self, job: TrainingJob):
        self.job = job
        self.started = time.monotonic()
        self._last_cancel_check = 0.0
        self._cancel = False
        self.steps = 0

    def on_step(self, metrics: dict) -> None:
        self.steps += 1
        step = int(metrics.get("step", self.steps))
        total = metrics.get("total_steps") or metrics.get("total")
        elapsed = time.monotonic() - self.started
        eta = (elapsed / step) * (total - step) if total and step else None
        values = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        samples = metrics.get("samples")
        if samples:  # PPO's sample responses go to the log, not the numeric series
            shown = samples[:4] if isinstance(samples, list) else samples
            job_log(job=self.job, message=f"step {step} samples: {shown}"[:4000])
        JobMetric.objects.create(job=self.job, step=step, values=values)
        progress = {"step": step, "total": total, "eta_seconds": round(eta, 1) if eta is not None else None}
        TrainingJob.objects.filter(pk=self.job.pk).update(progress=progress, heartbeat_at=timezone.now())
        for alarm in metrics.get("alarms") or []:
            job_log(job=self.job, level="WARNING", message=f"step {step}: {alarm}")

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            self._cancel = TrainingJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
        return self._cancel
