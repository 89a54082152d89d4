"""Training jobs (what to run, the exact data and model versions it runs on, its state, progress,
metric series and log lines) and the heartbeat rows of the workers that run them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class TrainingJob(models.Model):
    class Kind(models.TextChoices):
        GENERATE = "generate"
        SFT = "sft"
        REWARD_MODEL = "reward_model"
        PPO = "ppo"
        DPO = "dpo"
        EVALUATE = "evaluate"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINAL_STATES = ("succeeded", "failed", "cancelled")

    project = models.ForeignKey("annotate.Project", on_delete=models.CASCADE, related_name="jobs")
    round = models.ForeignKey("annotate.Round", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    config = models.JSONField(default=dict, blank=True, help_text="validated stage config")
    # Model version ids and the frozen data snapshot (ids of pairs, demonstrations or prompts).
    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(default=dict, blank=True, help_text="model_version ids, counts")
    progress = models.JSONField(default=dict, blank=True, help_text="step, total, eta_seconds")
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    celery_task_id = models.CharField(max_length=64, blank=True)
    worker_hostname = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="runs started, resumes included")
    time_limit_seconds = models.PositiveIntegerField(null=True, blank=True,
                                                     help_text="wall time of one run before it stops as failed")
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="when its message was last published")
    # Relative to ARTIFACTS_ROOT; the same on every run of the job (a relaunch finds its saved state
    # there) and unique to it (a random part, so a reset database never reuses a folder).
    output_path = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="last sign of life while running")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["generate", "sft", "reward_model", "ppo", "dpo",
                                                         "evaluate"]),
                                   name="job_kind_valid"),
            models.CheckConstraint(
                condition=Q(state__in=["queued", "running", "succeeded", "failed", "cancelled"]),
                name="job_state_valid"),
        ]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="job_stale_sweep")]

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES


class JobMetric(models.Model):
    """One row per reported step: {name: value} for that step (loss, accuracy, kl, …)."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metric_rows")
    step = models.PositiveIntegerField()
    values = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "step", "id"]
        indexes = [models.Index(fields=["job", "step"], name="job_metric_step")]


class JobLog(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="log_lines")
    level = models.CharField(max_length=10, default="INFO")
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class WorkerHeartbeat(models.Model):
    """A Celery worker process writes its row every few seconds while it runs."""

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.IntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    current_job_id = models.BigIntegerField(null=True, blank=True, help_text="the job it runs; empty when idle")
    idle_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.hostname
