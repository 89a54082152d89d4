"""What a running job tells the world and asks it: progress, metrics, stage labels and heartbeats
written to the job row, "should I stop?" (a cancel, the wall-time limit), and the retrying write that
lets a job wait out a database restart."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from .models import JobMetric, TrainingJob
from .services.jobs import job_log

log = logging.getLogger(__name__)
DB_OUTAGE_SECONDS = 120.0  # how long a running job waits out a database restart before it gives up


def persist(write):
    """Run a database write of a running job, waiting out a database that restarts or blinks
    (reconnecting between tries) instead of losing the job's training to one failed INSERT."""
    deadline = time.monotonic() + DB_OUTAGE_SECONDS
    delay = 0.5
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", str(exc).strip().splitlines()[0], delay)
            connections.close_all()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class JobCancelled(Exception):
    """Raised by a kind's run when its stage stopped because the reporter said so."""


class JobReporter:
    """The on_step / should_stop pair a stage gets: writes progress, metrics and heartbeats, and
    answers "stop?" from the cancel flag (read at most once a second, so a fast loop does not hammer
    the database) and from the job's wall-time limit."""

    def __init__(self, job: TrainingJob):
        self.job = job
        self.started = time.monotonic()
        self.limit = job.time_limit_seconds or settings.RLHF_JOB_TIME_LIMIT_SECONDS
        self._last_cancel_check = 0.0
        self._cancel = False
        self.timed_out = False
        self.steps = 0
        self.first_step: int | None = None

    def on_step(self, metrics: dict) -> None:
        self.steps += 1
        step = int(metrics.get("step", self.steps))
        if self.first_step is None:
            # A resumed run starts after its last saved step; points an earlier run reported past
            # that step are replaced by the ones this run reports, so the series stays one line.
            self.first_step = step
            persist(lambda: JobMetric.objects.filter(job=self.job, step__gte=step).delete())
        total = metrics.get("total_steps") or metrics.get("total")
        elapsed = time.monotonic() - self.started
        done = step - self.first_step + 1
        eta = (elapsed / done) * (total - step) if total and done > 0 else None
        values = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        samples = metrics.get("samples")
        progress = {"step": step, "total": total, "eta_seconds": round(eta, 1) if eta is not None else None,
                    "stage": metrics.get("stage") or "training"}

        def write() -> None:
            with transaction.atomic():
                if samples:  # PPO's sample responses go to the log, not the numeric series
                    shown = samples[:4] if isinstance(samples, list) else samples
                    job_log(job=self.job, message=f"step {step} samples: {shown}"[:4000])
                JobMetric.objects.create(job=self.job, step=step, values=values)
                TrainingJob.objects.filter(pk=self.job.pk).update(progress=progress, heartbeat_at=timezone.now())
                for alarm in metrics.get("alarms") or []:
                    job_log(job=self.job, level="WARNING", message=f"step {step}: {alarm}")

        persist(write)

    def stage(self, label: str, total: int | None = None) -> None:
        """Say what the job is doing now (loading model, generating, training, saving) and, when
        known, how many steps it will take: the page shows both from the job's first second."""
        def write() -> None:
            progress = {**(TrainingJob.objects.get(pk=self.job.pk).progress or {}), "stage": label}
            if total is not None:
                progress["total"] = total
            TrainingJob.objects.filter(pk=self.job.pk).update(progress=progress, heartbeat_at=timezone.now())

        persist(write)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.timed_out and now - self.started > self.limit:
            self.timed_out = True
        if not self._cancel and now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            self._cancel = persist(
                lambda: TrainingJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists())
        return self._cancel or self.timed_out


