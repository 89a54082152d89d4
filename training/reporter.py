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
    """The on_step / on_stage / should_stop callbacks a stage gets: writes progress, metrics and
    heartbeats, and answers "stop?" from the cancel flag (read at most once a second, so a fast
    loop does not hammer the database) and from the job's wall-time limit.

    Progress is {step, total, eta_seconds, eta_basis, stage}, kept here and written whole: the
    runner says the stage and the total before the model loads, so the page has both from the
    job's first second. Until a step has been timed the ETA comes from the project's last finished
    job of the same kind (eta_basis "earlier job"); after that from this run's own pace."""

    def __init__(self, job: TrainingJob):
        self.job = job
        self.started = time.monotonic()
        self.limit = job.time_limit_seconds or settings.RLHF_JOB_TIME_LIMIT_SECONDS
        self._last_cancel_check = 0.0
        self._cancel = False
        self.timed_out = False
        self.steps = 0
        self.first_step: int | None = None
        self.steps_before = 0  # steps done before this run began (a resumed run continues after its save)
        self.work_started: float | None = None  # when the first stage after loading began
        previous = job.progress or {}
        self.progress = {"step": previous.get("step") or 0, "total": previous.get("total"),
                         "eta_seconds": None, "eta_basis": None, "stage": previous.get("stage") or "starting"}
        self._prior_pace: float | None | bool = False  # False: not looked up yet

    def _seconds_per_step(self) -> float | None:
        """Wall time per step of the project's last succeeded job of this kind (None without one)."""
        if self._prior_pace is False:
            earlier = (TrainingJob.objects.filter(project_id=self.job.project_id, kind=self.job.kind,
                                                  state=TrainingJob.State.SUCCEEDED,
                                                  started_at__isnull=False, finished_at__isnull=False)
                       .exclude(pk=self.job.pk).order_by("-finished_at").first())
            total = (earlier.progress or {}).get("total") if earlier else None
            self._prior_pace = ((earlier.finished_at - earlier.started_at).total_seconds() / total
                                if earlier and isinstance(total, int | float) and total > 0 else None)
        return self._prior_pace

    def _estimate_from_earlier(self) -> None:
        total, step = self.progress["total"], self.progress["step"] or 0
        pace = self._seconds_per_step() if total else None
        if pace is not None:
            self.progress["eta_seconds"] = round(pace * max(total - step, 0), 1)
            self.progress["eta_basis"] = "earlier job"

    def _write(self) -> None:
        progress = dict(self.progress)
        persist(lambda: TrainingJob.objects.filter(pk=self.job.pk).update(progress=progress,
                                                                           heartbeat_at=timezone.now()))

    def on_step(self, metrics: dict) -> None:
        self.steps += 1
        step = int(metrics.get("step", self.steps))
        if self.first_step is None:
            # A resumed run starts after its last saved step; points an earlier run reported past
            # that step are replaced by the ones this run reports, so the series stays one line.
            self.first_step = step
            # A first report may cover several steps (a generate job reports a batch at a time).
            self.steps_before = min(self.progress["step"] or 0, step - 1)
            persist(lambda: JobMetric.objects.filter(job=self.job, step__gte=step).delete())
        total = (metrics.get("total_steps") or metrics.get("total") or metrics.get("total_iterations")
                 or self.progress["total"])
        now = time.monotonic()
        elapsed = now - (self.work_started or self.started)
        done = step - self.steps_before
        eta = (elapsed / done) * (total - step) if total and done > 0 else None
        values = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        samples = metrics.get("samples")
        self.progress.update(step=step, total=total, eta_seconds=round(eta, 1) if eta is not None else None,
                             eta_basis="this run" if eta is not None else None,
                             stage=metrics.get("stage") or self.progress["stage"])
        progress = dict(self.progress)

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
        """Say what the job is doing now (loading model, generating, scoring, updating, training,
        evaluating, saving) and, when known, how many steps it will take."""
        if label == self.progress["stage"] and (total is None or total == self.progress["total"]):
            return  # a PPO iteration says "generating" every time; one write is enough
        if self.work_started is None and label != "loading model":
            self.work_started = time.monotonic()
        self.progress["stage"] = label
        if total is not None:
            self.progress["total"] = total
        if self.progress["eta_basis"] != "this run":
            self._estimate_from_earlier()
        self._write()

    def on_stage(self, label: str) -> None:
        """The stage callback rlhf's training functions take."""
        self.stage(label)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.timed_out and now - self.started > self.limit:
            self.timed_out = True
        if not self._cancel and now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            self._cancel = persist(
                lambda: TrainingJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists())
        return self._cancel or self.timed_out
