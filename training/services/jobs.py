"""Training job writes: launch (validate, freeze the data, enqueue on commit) and the log lines a
job records. How jobs end and start again is in lifecycle.py; running one is in ../runner.py."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from annotate.models import Project, Round
from config.errors import ApplicationError, NotFound

from ..kinds import config_validate, job_kind, planned_steps
from ..models import JobLog, TrainingJob

log = logging.getLogger(__name__)
RUN_JOB_TASK = "training.run_job"


def training_job_launch(*, project: Project, kind: str, config: dict | None = None, inputs: dict | None = None,
                        user=None, round: Round | None = None, time_limit_seconds: int | None = None) -> TrainingJob:
    """Validate the config and inputs, freeze the data, create the job and enqueue it once the
    transaction commits."""
    spec = job_kind(kind)
    clean_config = config_validate(kind, config or {})
    inputs = dict(inputs or {})
    unknown = set(inputs) - set(spec.inputs)
    if unknown:
        raise ApplicationError(f"unknown inputs for a {kind} job: {', '.join(sorted(unknown))} "
                               f"(it takes {', '.join(spec.inputs)})", code="invalid_inputs",
                               details={k: "unknown" for k in unknown})
    resolved = spec.snapshotter()(project=project, config=clean_config, inputs=inputs)
    with transaction.atomic():
        job = TrainingJob.objects.create(project=project, kind=kind, config=clean_config, inputs=resolved,
                                         created_by=user if getattr(user, "is_authenticated", False) else None,
                                         round=round, time_limit_seconds=time_limit_seconds,
                                         progress={"step": 0, "total": _planned(kind, clean_config, resolved),
                                                   "eta_seconds": None, "stage": "queued"})
        job.output_path = f"jobs/{job.pk:06d}-{kind}-{uuid.uuid4().hex[:8]}"
        job.save(update_fields=["output_path"])
        job_log(job=job, message=f"queued {kind} job on policy #{resolved['policy']}")
        transaction.on_commit(lambda: enqueue(job.id))
    return job


def _planned(kind: str, config: dict, inputs: dict) -> int | None:
    """The job's step total, shown from the moment it is queued."""
    ids = next((inputs[k] for k in ("pair_ids", "demonstration_ids", "prompt_ids") if isinstance(inputs.get(k), list)),
               [])
    return planned_steps(kind, config, len(ids))


def enqueue(job_id: int) -> None:
    """Publish the job's message on the gpu queue (call it on commit). A broker that is down does
    not lose the job: it stays queued and the housekeeping publishes it again."""
    from config.celery import app

    TrainingJob.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    try:  # by name: the web process never imports the worker's task module
        result = app.send_task(RUN_JOB_TASK, args=[job_id], queue="gpu", retry=False)
    except Exception as exc:  # broker unreachable: log it; jobs_republish_lost sends it later
        log.warning("could not publish job %s: %s", job_id, exc)
        TrainingJob.objects.filter(pk=job_id).update(enqueued_at=None)
        JobLog.objects.create(job_id=job_id, level="WARNING",
                              message=f"the broker did not take the job's message ({exc}); it is sent again "
                                      "once a worker is idle")
        return
    TrainingJob.objects.filter(pk=job_id).update(celery_task_id=result.id or "")


def training_job_get(*, job_id: int) -> TrainingJob:
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def job_log(*, job: TrainingJob, message: str, level: str = "INFO") -> None:
    JobLog.objects.create(job=job, level=level, message=message[:10000])
