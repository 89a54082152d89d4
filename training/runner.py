"""Running one job on a worker: claim it (once), run its kind with a reporter and a heartbeat, and
end it through lifecycle.job_finish (succeeded, cancelled, failed, or past its wall-time limit)."""

from __future__ import annotations

import logging
import threading
import traceback

from django.db import close_old_connections, transaction
from django.utils import timezone

from .kinds import job_kind
from .models import TrainingJob, WorkerHeartbeat
from .reporter import JobCancelled, JobReporter, persist
from .services.jobs import job_log
from .services.lifecycle import job_finish

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0


def _claim(job_id: int, hostname: str) -> TrainingJob | None:
    """queued -> running, exactly once: a redelivered message finds the job no longer queued."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            log.warning("job %s does not exist; message dropped", job_id)
            return None
        if job.state != TrainingJob.State.QUEUED:
            job_log(job=job, message=f"message for job in state {job.state} ignored by {hostname}")
            return None
        now = timezone.now()
        job.state = TrainingJob.State.RUNNING
        job.started_at = job.heartbeat_at = now
        job.worker_hostname = hostname
        job.attempts += 1
        job.save(update_fields=["state", "started_at", "heartbeat_at", "worker_hostname", "attempts"])
        WorkerHeartbeat.objects.filter(hostname=hostname).update(current_job_id=job.pk, idle_since=None)
        job_log(job=job, message=f"started on {hostname}" + (f" (run {job.attempts})" if job.attempts > 1 else ""))
    return job


def _beat(job_id: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            TrainingJob.objects.filter(pk=job_id, state="running").update(heartbeat_at=timezone.now())
        except Exception as exc:  # the database may blink; the next beat retries
            log.warning("job heartbeat failed: %s", exc)


def job_run(*, job_id: int, hostname: str) -> str:
    job = _claim(job_id, hostname)
    if job is None:
        return "ignored"
    stop = threading.Event()
    threading.Thread(target=_beat, args=(job.pk, stop), daemon=True, name=f"job-{job.pk}-heartbeat").start()
    reporter = JobReporter(job)
    try:
        outputs = job_kind(job.kind).runner()(job, reporter)
    except JobCancelled:
        if reporter.timed_out and not reporter._cancel:
            why = (f"wall-time limit of {reporter.limit} s reached; relaunch the job to continue from its last "
                   "saved state")
            persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.FAILED, error=why))
            return "failed"
        persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.CANCELLED,
                                    message="cancelled; relaunch the job to continue from its last saved state"))
        return "cancelled"
    except Exception as exc:
        trace, error = traceback.format_exc()[-8000:], f"{type(exc).__name__}: {exc}"
        persist(lambda: job_log(job=job, level="ERROR", message=trace))
        persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.FAILED, error=error))
        raise
    finally:
        stop.set()
    persist(lambda: job_finish(job_id=job.pk, state=TrainingJob.State.SUCCEEDED, outputs=outputs,
                                message=f"succeeded: {_outcome_text(outputs)}"))
    return "succeeded"


def _outcome_text(outputs: dict) -> str:
    """The job's last log line, for people: what it made and a few final numbers, not a raw dict."""
    parts = []
    if outputs.get("model_version"):
        parts.append(f"model version #{outputs['model_version']}")
    if outputs.get("examples") is not None:
        parts.append(f"from {outputs['examples']} examples")
    if outputs.get("tasks") is not None:
        parts.append(f"{outputs['tasks']} tasks, {outputs.get('responses', 0)} responses")
    if outputs.get("candidate"):
        parts.append(f"evaluated model version #{outputs['candidate']}")
    numbers = outputs.get("metrics") or outputs.get("evaluation") or {}
    shown = [f"{k} {v:.4g}" for k, v in numbers.items()
             if isinstance(v, float) and k in ("loss", "eval_loss", "eval_accuracy", "reward", "kl", "win_rate",
                                                 "mean_reward", "objective")]
    return ", ".join(parts) + (f"; {', '.join(shown)}" if shown else "") if parts or shown else "done"
