"""What annotators produce: rankings (raw), the pairs derived from them, demonstrations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from .projects import Project, Prompt
from .tasks import Lease, RankingTask, Response


class Ranking(models.Model):
    """One annotator's ordering of a task's responses: groups best first, ties within a group.
    Stored as submitted and never updated."""

    # both_bad: a tie whose responses are all unusable (pairwise "both bad"); it yields no pair.
    FLAGS = ("unsafe", "nonsense", "refusal", "both_bad", "other")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="rankings")
    lease = models.OneToOneField(Lease, on_delete=models.PROTECT, related_name="ranking")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rankings")
    # Which of the task's k places this ranking fills; unique per task, so k is a hard ceiling.
    slot = models.PositiveSmallIntegerField()
    groups = models.JSONField(help_text="[[response ids], ...] best first; a group holds ties")
    shown_order = models.JSONField(default=list)
    flags = models.JSONField(default=list, blank=True)
    rationale = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    gold_correct = models.BooleanField(null=True, blank=True, help_text="on gold tasks: best response found")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="ranking_once_per_task_annotator"),
            models.UniqueConstraint(fields=["task", "slot"], name="ranking_slot_unique_per_task"),
            models.CheckConstraint(condition=Q(slot__lt=10), name="ranking_slot_below_max_k"),
        ]
        indexes = [models.Index(fields=["project", "id"], name="ranking_project")]


class Pair(models.Model):
    """winner beat loser in one ranking; margin is how many groups apart they were."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="pairs")
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="pairs")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    winner = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    loser = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    margin = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["ranking", "winner", "loser"], name="pair_once_per_ranking"),
            models.CheckConstraint(condition=~Q(winner=F("loser")), name="pair_winner_not_loser"),
            models.CheckConstraint(condition=Q(margin__gte=1), name="pair_margin_positive"),
        ]
        indexes = [models.Index(fields=["project", "id"], name="pair_project")]


class Demonstration(models.Model):
    """A human-written ideal response to a prompt (SFT data); the text is a human Response."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="demonstrations")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    response = models.OneToOneField(Response, on_delete=models.CASCADE, related_name="demonstration")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                  related_name="demonstrations")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
