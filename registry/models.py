"""Model versions: checkpoint directories in Hugging Face format, with their lineage."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    """A checkpoint directory in Hugging Face format under ARTIFACTS_ROOT."""

    class Kind(models.TextChoices):
        POLICY = "policy"
        REWARD = "reward"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Relative to ARTIFACTS_ROOT so the artifacts folder can move between hosts.
    path = models.CharField(max_length=500)
    source = models.CharField(max_length=500, help_text="where it came from: gguf wheel, hub id, dir, job")
    sha256 = models.CharField(max_length=64, blank=True, help_text="checksum of the imported source file")
    project = models.ForeignKey(
        "annotate.Project", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="model_versions",
    )
    parents = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="children")
    job = models.ForeignKey("training.TrainingJob", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="model_versions", help_text="the job that made it")
    metrics = models.JSONField(default=dict, blank=True)
    info = models.JSONField(default=dict, blank=True, help_text="architecture, parameter count, dtype")
    promoted = models.BooleanField(default=False)
    promoted_at = models.DateTimeField(null=True, blank=True)
    # Archived versions are hidden from lists and pickers; their files stay until deleted on purpose.
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One served policy per project: the rule is the database's too.
            models.UniqueConstraint(
                fields=["project"], condition=Q(promoted=True, kind="policy"),
                name="one_promoted_policy_per_project",
            ),
            models.CheckConstraint(condition=Q(kind__in=["policy", "reward"]), name="model_version_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind} #{self.pk})"


class ModelPromotion(models.Model):
    """One period a policy was the one its project served: from promoted_at until ended_at (None
    while it still is). "Roll back" offers only versions with such a period."""

    project = models.ForeignKey("annotate.Project", on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="promotions")
    promoted_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    rollback = models.BooleanField(default=False, help_text="the version had been served before")

    class Meta:
        ordering = ["id"]
        constraints = [
            # The history agrees with the rule on ModelVersion: one served policy per project.
            models.UniqueConstraint(fields=["project"], condition=Q(ended_at__isnull=True),
                                    name="one_open_promotion_per_project"),
        ]

