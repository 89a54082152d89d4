"""Responses with their lineage, ranking tasks and the leases that hand tasks to annotators."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from .projects import Project, Prompt, Round


class Response(models.Model):
    """A candidate answer to a prompt and where it came from."""

    class Source(models.TextChoices):
        MODEL = "model"
        IMPORTED = "imported"
        HUMAN = "human"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    source = models.CharField(max_length=16, choices=Source.choices)
    # Plain values, not a foreign key: the model registry lives in worker, which depends on us.
    model_version_id = models.BigIntegerField(null=True, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    sampling = models.JSONField(default=dict, blank=True,
                                help_text="strategy, temperature, top_k, top_p, seed, max_new_tokens")
    parent_response = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="edits", help_text="the response a human edited")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(source__in=["model", "imported", "human"]),
                                   name="response_source_valid"),
        ]

    def lineage(self) -> dict:
        return {"source": self.source, "model_version_id": self.model_version_id,
                "model_name": self.model_name, "sampling": self.sampling,
                "parent_response": self.parent_response_id}


class RankingTask(models.Model):
    """A prompt with 2..8 responses that needs `rankings_needed` independent rankings.

    `claimed` counts the rankings done plus the live leases; the queue of open tasks is the
    partial index where claimed < rankings_needed, so handing out a task never scans or sorts
    the whole table. The check constraints make "at most k" a rule of the database too.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    round = models.ForeignKey(Round, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    responses = models.ManyToManyField(Response, through="TaskResponse", related_name="tasks")
    gold_response = models.ForeignKey(Response, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+", help_text="known best response (gold task)")
    # Copied from the project when the task is made, so later edits of k do not break the counters.
    rankings_needed = models.PositiveSmallIntegerField()
    rankings_done = models.PositiveSmallIntegerField(default=0)
    claimed = models.PositiveSmallIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(rankings_needed__gte=1, rankings_needed__lte=10),
                                   name="task_rankings_needed_1_10"),
            models.CheckConstraint(condition=Q(rankings_done__lte=F("claimed")), name="task_done_le_claimed"),
            models.CheckConstraint(condition=Q(claimed__lte=F("rankings_needed")),
                                   name="task_claimed_le_needed"),
        ]
        indexes = [
            models.Index(fields=["project", "id"], condition=Q(claimed__lt=F("rankings_needed")),
                         name="task_open_queue"),
            models.Index(fields=["round", "rankings_done"], name="task_round_progress"),
        ]

    @property
    def is_complete(self) -> bool:
        return self.rankings_done >= self.rankings_needed

    def __str__(self) -> str:
        return f"task {self.pk}"


class TaskResponse(models.Model):
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="task_responses")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["task", "position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "response"], name="task_response_once"),
            models.UniqueConstraint(fields=["task", "position"], name="task_response_position_once"),
        ]


class Lease(models.Model):
    """One annotator's assignment to one task. There is one row per (task, annotator): a lease
    that expired is reactivated if the same annotator is given the task again."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The order the responses were shown in, shuffled per annotator against position bias.
    shown_order = models.JSONField(default=list)
    expires_at = models.DateTimeField()
    skip_reason = models.TextField(blank=True)
    # When the lease was last handed out (a reactivated lease starts again): heartbeats cannot
    # keep it past created_at + RLHF_LEASE_MAX_SECONDS.
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="lease_once_per_task_annotator"),
            # One live lease per annotator and project: a double click cannot take two tasks.
            models.UniqueConstraint(fields=["project", "annotator"], condition=Q(status="active"),
                                    name="lease_one_active_per_annotator"),
            models.CheckConstraint(condition=Q(status__in=["active", "submitted", "skipped", "expired"]),
                                   name="lease_status_valid"),
        ]
        indexes = [
            models.Index(fields=["project", "expires_at"], condition=Q(status="active"), name="lease_active_expiry"),
            models.Index(fields=["annotator", "status"], name="lease_annotator_status"),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.status})"
