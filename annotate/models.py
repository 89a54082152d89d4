"""Annotation data. The foundation defines Project and Prompt; the annotation core adds the rest."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    guidelines = models.TextField(blank=True)
    responses_per_task = models.PositiveSmallIntegerField(default=2)
    rankings_per_task = models.PositiveSmallIntegerField(default=1, help_text="k independent rankings per task")
    allow_ties = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(responses_per_task__gte=2, responses_per_task__lte=8),
                                   name="project_responses_per_task_2_8"),
            models.CheckConstraint(condition=Q(rankings_per_task__gte=1, rankings_per_task__lte=10),
                                   name="project_rankings_per_task_1_10"),
        ]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField(blank=True, help_text="plain prompt; empty when messages are given")
    messages = models.JSONField(null=True, blank=True, help_text="chat messages [{role, content}]")
    source = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True)
    reference = models.TextField(blank=True, help_text="reference answer for verifiable tasks")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text[:60]
