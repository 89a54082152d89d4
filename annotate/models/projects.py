"""Projects, their prompts and their rounds."""

from __future__ import annotations

import hashlib
import json

from django.db import models
from django.db.models import Q


class VisibleProjects(models.Manager):
    """Projects as everyone sees them: without the hidden staging projects of running imports."""

    def get_queryset(self):
        return super().get_queryset().filter(import_target__isnull=True)


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    guidelines = models.TextField(blank=True)
    responses_per_task = models.PositiveSmallIntegerField(default=2)
    rankings_per_task = models.PositiveSmallIntegerField(default=1, help_text="k independent rankings per task")
    allow_ties = models.BooleanField(default=True)
    # How a self-running round turns rankings into a policy, and whether an admin signs it off.
    policy_algorithm = models.CharField(max_length=8, choices=[("ppo", "PPO"), ("dpo", "DPO")], default="ppo")
    require_approval = models.BooleanField(default=False)
    # Off: images in model output that would load from another site are shown as links (an image
    # from anywhere is a beacon that tells its server each time a task is shown).
    allow_remote_images = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set on the hidden project an import writes into, batch by batch, before its rows move to
    # this target in one short transaction (services/imports.py). No one else sees such a project.
    import_target = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    objects = VisibleProjects()
    all_objects = models.Manager()

    class Meta:
        ordering = ["id"]
        base_manager_name = "all_objects"
        constraints = [
            models.CheckConstraint(condition=Q(responses_per_task__gte=2, responses_per_task__lte=8),
                                   name="project_responses_per_task_2_8"),
            models.CheckConstraint(condition=Q(rankings_per_task__gte=1, rankings_per_task__lte=10),
                                   name="project_rankings_per_task_1_10"),
            models.CheckConstraint(condition=Q(policy_algorithm__in=["ppo", "dpo"]),
                                   name="project_policy_algorithm_valid"),
        ]

    def __str__(self) -> str:
        return self.name


def prompt_content_hash(text: str, messages: list | None) -> str:
    """What makes two prompts duplicates: the same text, or the same chat messages."""
    payload = json.dumps(messages, sort_keys=True, ensure_ascii=False) if messages else text.strip()
    return hashlib.sha256(payload.encode()).hexdigest()


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField(blank=True, help_text="plain prompt; empty when messages are given")
    messages = models.JSONField(null=True, blank=True, help_text="chat messages [{role, content}]")
    source = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True)
    reference = models.TextField(blank=True, help_text="reference answer for verifiable tasks")
    # Lets the importer find duplicates with an index lookup instead of comparing texts.
    content_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "content_hash"], name="prompt_project_hash")]

    def save(self, *args, **kwargs):
        # A derived value, not a rule: filled here too so prompts made with objects.create()
        # (the demo loader) are still found as duplicates by the importer.
        if not self.content_hash:
            self.content_hash = prompt_content_hash(self.text, self.messages)
        super().save(*args, **kwargs)

    def as_messages(self) -> list[dict]:
        return list(self.messages) if self.messages else [{"role": "user", "content": self.text}]

    def __str__(self) -> str:
        return self.text[:60]


class Round(models.Model):
    """One turn of the loop: prompts chosen, candidates generated, tasks ranked, models trained.

    `status` is the round's stage, moved only by annotate.services.projects.round_transition
    along ROUND_TRANSITIONS; `stage_job_id` is the job that runs the current stage; a failed
    round keeps the stage it failed in and why, and can be retried from there.
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        GENERATING = "generating"
        ANNOTATING = "annotating"
        REWARD_MODEL = "reward_model"  # a self-running round trains its reward model
        POLICY = "policy"  # ... then PPO or DPO
        EVALUATING = "evaluating"  # ... then compares the candidate with the served policy
        AWAITING_APPROVAL = "awaiting_approval"  # ... and waits for an admin to promote it
        CLOSED = "closed"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    # Plain ids: annotate must not import worker, whose TrainingJob made the candidates.
    generate_job_id = models.BigIntegerField(null=True, blank=True)
    stage_job_id = models.BigIntegerField(null=True, blank=True, help_text="the job running the current stage")
    failed_stage = models.CharField(max_length=20, blank=True, help_text="the stage a failed round stopped in")
    reason = models.TextField(blank=True, help_text="why the round failed")
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="round_number_unique_per_project"),
            models.CheckConstraint(condition=Q(status__in=["draft", "generating", "annotating", "reward_model",
                                                           "policy", "evaluating", "awaiting_approval", "closed",
                                                           "failed"]),
                                   name="round_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.project} round {self.number}"


S = Round.Status
# Where a round may go from each stage; a failed round goes back to the stage it failed in.
ROUND_TRANSITIONS: dict[str, set[str]] = {
    S.DRAFT: {S.GENERATING, S.FAILED},
    S.GENERATING: {S.ANNOTATING, S.FAILED},
    S.ANNOTATING: {S.REWARD_MODEL, S.CLOSED, S.FAILED},
    S.REWARD_MODEL: {S.POLICY, S.FAILED},
    S.POLICY: {S.EVALUATING, S.FAILED},
    S.EVALUATING: {S.AWAITING_APPROVAL, S.CLOSED, S.FAILED},
    S.AWAITING_APPROVAL: {S.CLOSED, S.FAILED},
    S.CLOSED: set(),
    S.FAILED: {S.GENERATING, S.ANNOTATING, S.REWARD_MODEL, S.POLICY, S.EVALUATING},
}
