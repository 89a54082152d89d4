"""What annotators produce: rankings (raw), the pairs derived from them, demonstrations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from .projects import Project, Prompt
from .tasks import Lease, RankingTask, Response


class RankingQuerySet(models.QuerySet):
    def live(self):
        """The rankings that count: each annotator's latest ranking of a task, not the ones they revised."""
        return self.filter(superseded_at__isnull=True)


class Ranking(models.Model):
    """One annotator's ordering of a task's responses: groups best first, ties within a group.
    Stored as submitted and never updated: a revision is a new row that `revises` this one, which
    then only gains `superseded_at` (its content stays, for audit; its pairs stay too, so a job's
    data snapshot taken before the revision still reads what it trained on)."""

    # both_bad: a tie whose responses are all unusable (pairwise "both bad"); it yields no pair.
    FLAGS = ("unsafe", "nonsense", "refusal", "both_bad", "other")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="rankings")
    # One live ranking per lease; a revision is made under the lease of the ranking it revises.
    lease = models.ForeignKey(Lease, on_delete=models.PROTECT, related_name="rankings")
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
    revises = models.OneToOneField("self", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="revised_by", help_text="the ranking this one replaces")
    superseded_at = models.DateTimeField(null=True, blank=True, help_text="when a revision replaced it")

    objects = RankingQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            # One live ranking per task and annotator, and per slot: k stays a hard ceiling with
            # revisions too (a revision takes the slot of the ranking it replaces).
            models.UniqueConstraint(fields=["task", "annotator"], condition=Q(superseded_at__isnull=True),
                                    name="ranking_live_once_per_task_annotator"),
            models.UniqueConstraint(fields=["task", "slot"], condition=Q(superseded_at__isnull=True),
                                    name="ranking_live_slot_unique_per_task"),
            models.UniqueConstraint(fields=["lease"], condition=Q(superseded_at__isnull=True),
                                    name="ranking_live_once_per_lease"),
            models.CheckConstraint(condition=Q(slot__lt=10), name="ranking_slot_below_max_k"),
            models.CheckConstraint(condition=~Q(revises=F("id")), name="ranking_revises_another"),
        ]
        indexes = [models.Index(fields=["project", "id"], name="ranking_project")]


class PairQuerySet(models.QuerySet):
    def live(self):
        """Pairs of rankings that count (a revised ranking's pairs stay for the snapshots that hold them)."""
        return self.filter(ranking__superseded_at__isnull=True)


class Pair(models.Model):
    """winner beat loser in one ranking; margin is how many groups apart they were."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="pairs")
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="pairs")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    winner = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    loser = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    margin = models.PositiveSmallIntegerField()

    objects = PairQuerySet.as_manager()

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
