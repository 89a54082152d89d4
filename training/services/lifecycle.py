"""How jobs end and start again. Every terminal transition (the runner's, a cancel, the stale-job
sweep, the orphan check when a worker starts) goes through `job_finish`, which also tells the job's
round, in the same transaction. A failed or cancelled job can be relaunched: it runs again on the
same data snapshot, in the same job directory, and continues from its last saved state."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotate.models import Round
from annotate.services.projects import round_transition
from config.errors import ApplicationError, Conflict

from ..models import TrainingJob, WorkerHeartbeat
from .jobs import enqueue, job_log
from .rounds import JOB_STAGES, round_job_finished, round_job_requeued, round_stage_launch

log = logging.getLogger(__name__)
RETRYABLE = (TrainingJob.State.FAILED, TrainingJob.State.CANCELLED)


def job_finish(*, job_id: int, state: str, error: str = "", outputs: dict | None = None,
               message: str | None = None) -> TrainingJob | None:
    """Put a job in its final state (once: a job already final is left alone and None comes back),
    log why, and move its round on or fail it with the reason."""
    if state not in TrainingJob.FINAL_STATES:
        raise ValueError(f"{state} is not a final state")
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_final:
            return None
        now = timezone.now()
        job.state, job.error, job.finished_at, job.heartbeat_at = state, error[:10000], now, now
        if outputs is not None:
            job.outputs = outputs
        job.save(update_fields=["state", "error", "finished_at", "heartbeat_at", "outputs"])
        job_log(job=job, level="ERROR" if state == TrainingJob.State.FAILED else "INFO",
                message=message or (f"{state}: {error}" if error else state))
        WorkerHeartbeat.objects.filter(current_job_id=job.pk).update(current_job_id=None, idle_since=now)
        try:
            with transaction.atomic():  # a round that cannot move on must not undo the job's end
                round_job_finished(job=job)
        except Exception as exc:
            log.exception("round of job %s could not move on", job.pk)
            job_log(job=job, level="ERROR", message=f"the round could not move on: {exc}")
    return job


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """A queued job is cancelled at once; a running one stops within a few seconds (its loops ask
    between tokens and between optimizer steps) and keeps its resumable state."""
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_final:
            raise Conflict(f"job {locked.pk} already {locked.state}", code="job_finished")
        locked.cancel_requested = True
        locked.save(update_fields=["cancel_requested"])
        job_log(job=locked, message="cancel requested")
        if locked.state == TrainingJob.State.QUEUED:
            job_finish(job_id=locked.pk, state=TrainingJob.State.CANCELLED, message="cancelled before it started")
    return TrainingJob.objects.get(pk=job.pk)


def training_job_retry(*, job: TrainingJob, user=None, reason: str = "", launch: dict | None = None) -> TrainingJob:
    """Queue a failed or cancelled job again. It keeps its config, its data snapshot and its job
    directory, so the stage continues from its last saved state and the metric series goes on;
    its round (if the job was the round's current stage) goes back to that stage. `launch` may
    change how many processes it runs on ({"processes", "accelerate_config"}); the stage refuses a
    count its saved state cannot resume on (a sharded FSDP/DeepSpeed state)."""
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.state not in RETRYABLE:
            raise Conflict(f"job {locked.pk} is {locked.state}; only failed or cancelled jobs are relaunched",
                           code="job_not_retryable")
        if launch:
            locked.config = {**locked.config, **launch_fields_validate(kind=locked.kind, raw=launch)}
            locked.save(update_fields=["config"])
            job_log(job=locked, message=f"relaunch on {locked.config.get('processes', 1)} process(es)")
        _requeue(locked, reason or f"relaunched{' by ' + user.username if getattr(user, 'username', '') else ''}: "
                                   "continues from its last saved state")
        round_job_requeued(job=locked)
    return locked


def launch_fields_validate(*, kind: str, raw: Any) -> dict:
    """The launch fields of a relaunch, checked like the job's config at launch."""
    from ..kinds import LAUNCH, job_kind

    if not isinstance(raw, dict):
        raise ApplicationError("the relaunch body must be a JSON object", code="invalid_config")
    unknown = set(raw) - set(LAUNCH)
    if unknown or not set(LAUNCH) <= set(job_kind(kind).extra):
        raise ApplicationError(f"a relaunch may change only {', '.join(LAUNCH)} of a training job",
                               code="invalid_config", details={k: "not allowed" for k in unknown or raw})
    errors = {k: msg for k, v in raw.items() if (msg := LAUNCH[k].check(v)) is not None}
    if errors:
        first = next(iter(errors.items()))
        raise ApplicationError(f"invalid relaunch: {first[0]}: {first[1]}", code="invalid_config", details=errors)
    return dict(raw)


def _requeue(job: TrainingJob, message: str) -> None:
    job.state = TrainingJob.State.QUEUED
    job.error, job.cancel_requested, job.finished_at = "", False, None
    job.save(update_fields=["state", "error", "cancel_requested", "finished_at"])
    job_log(job=job, message=message)
    transaction.on_commit(lambda: enqueue(job.pk))


def _worker_lost(job: TrainingJob, why: str) -> None:
    """A running job whose worker is gone: resume it on a live worker while it has attempts left,
    else fail it. Called with the job row locked."""
    if job.attempts < settings.RLHF_JOB_MAX_ATTEMPTS and not job.cancel_requested:
        _requeue(job, f"{why}; resuming from its last saved state (run {job.attempts + 1} of "
                      f"{settings.RLHF_JOB_MAX_ATTEMPTS})")
        return
    state = TrainingJob.State.CANCELLED if job.cancel_requested else TrainingJob.State.FAILED
    job_finish(job_id=job.pk, state=state, error=why if state == TrainingJob.State.FAILED else "",
               message=why + ("; relaunch it to continue from its last saved state"
                              if state == TrainingJob.State.FAILED else ""))


def jobs_sweep_stale(*, now=None, stale_seconds: int | None = None) -> list[int]:
    """Running jobs whose heartbeat stopped lost their worker: resume or fail them (any live worker
    runs this, so no job stays "running" forever)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=stale_seconds or settings.RLHF_JOB_STALE_SECONDS)
    swept = []
    for job_id in TrainingJob.objects.filter(state="running", heartbeat_at__lt=cutoff).values_list("id", flat=True):
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.state != "running" or (job.heartbeat_at and job.heartbeat_at >= cutoff):
                continue
            last = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if job.heartbeat_at else "never"
            _worker_lost(job, f"worker {job.worker_hostname or '?'} stopped sending heartbeats (last at {last})")
            swept.append(job_id)
    return swept


def jobs_fail_orphans(*, hostname: str) -> list[int]:
    """A worker that starts cannot be running anything yet: jobs it held before it restarted lost it."""
    orphans = []
    for job_id in TrainingJob.objects.filter(state="running", worker_hostname=hostname).values_list("id", flat=True):
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.state == "running" and job.worker_hostname == hostname:
                _worker_lost(job, f"worker {hostname} restarted while the job was running")
                orphans.append(job_id)
    return orphans


def jobs_republish_lost(*, now=None, idle_seconds: int | None = None) -> list[int]:
    """Queued jobs whose message is gone (a broker that restarted without persistence, a publish
    that failed) would wait forever. A live worker on the gpu queue takes a message within a second,
    so when one has been idle for `idle_seconds` (default: half of RLHF_JOB_STALE_SECONDS) while a
    job has been queued that long, the job's message was lost: publish it again. A duplicate is
    harmless, as a job is claimed once."""
    now = now or timezone.now()
    idle_seconds = idle_seconds if idle_seconds is not None else max(2, settings.RLHF_JOB_STALE_SECONDS // 2)
    alive = now - timedelta(seconds=settings.RLHF_WORKER_STALE_SECONDS)
    idle = next((w for w in WorkerHeartbeat.objects.filter(
        last_seen__gte=alive, current_job_id__isnull=True, idle_since__lte=now - timedelta(seconds=idle_seconds))
        .order_by("idle_since") if "gpu" in (w.queues or [])), None)
    if idle is None:
        return []
    waited = Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=now - timedelta(seconds=idle_seconds))
    lost = list(TrainingJob.objects.filter(waited, state="queued").order_by("id").values_list("id", flat=True)[:20])
    for job_id in lost:
        job_log(job=TrainingJob.objects.get(pk=job_id), level="WARNING",
                message=f"still queued while worker {idle.hostname} is idle: its message was lost; published again")
        enqueue(job_id)
    return lost


def round_retry(*, round_obj: Round, user=None) -> Round:
    """Take a failed round back to the stage it failed in: relaunch that stage's job (it resumes
    from its last saved state), or start the stage again when its job never started."""
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=round_obj.pk)
        if locked.status != Round.Status.FAILED:
            raise Conflict(f"round {locked.number} is {locked.status}; only a failed round is retried",
                           code="round_state")
        job = TrainingJob.objects.filter(pk=locked.stage_job_id, round=locked).first()
        stage = locked.failed_stage
        if job is not None and job.state in RETRYABLE and stage != Round.Status.ANNOTATING:
            training_job_retry(job=job, user=user, reason="relaunched with its round: continues from its last "
                                                         "saved state")
        elif stage in JOB_STAGES:
            round_stage_launch(locked, stage)
        else:  # annotating: the housekeeping starts the reward model again once the tasks are done
            round_transition(round=locked, to=stage, job_id=None)
    return Round.objects.get(pk=round_obj.pk)
