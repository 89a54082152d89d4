"""Projects and rounds: create them, move a round through its states."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from config.errors import ApplicationError, Conflict

from ..models import Project, Round
from ..models.projects import ROUND_TRANSITIONS


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApplicationError(f"{name} must be an integer from {low} to {high}, not {value!r}",
                               code="invalid_project", details={"field": name})


@transaction.atomic
def project_create(*, name: str, slug: str | None = None, guidelines: str = "", responses_per_task: int = 2,
                   rankings_per_task: int = 1, allow_ties: bool = True) -> Project:
    name = (name or "").strip()
    if not name:
        raise ApplicationError("a project needs a name", code="invalid_project", details={"field": "name"})
    _check_range("responses_per_task", responses_per_task, 2, 8)
    _check_range("rankings_per_task", rankings_per_task, 1, 10)
    slug = slugify(slug or name)[:100]
    if not slug:
        raise ApplicationError("the slug must contain letters or digits", code="invalid_project",
                               details={"field": "slug"})
    if Project.objects.filter(slug=slug).exists():
        raise Conflict(f"a project with slug {slug!r} already exists", code="project_exists")
    try:
        with transaction.atomic():
            return Project.objects.create(
                name=name, slug=slug, guidelines=guidelines, responses_per_task=responses_per_task,
                rankings_per_task=rankings_per_task, allow_ties=allow_ties,
            )
    except IntegrityError:  # a concurrent create took the slug between the check and the insert
        raise Conflict(f"a project with slug {slug!r} already exists", code="project_exists") from None


UPDATABLE = ("name", "guidelines", "responses_per_task", "rankings_per_task", "allow_ties", "policy_algorithm",
             "require_approval", "allow_remote_images")


@transaction.atomic
def project_update(*, project: Project, **changes) -> Project:
    """Change a project's settings. k and the response count apply to tasks made from now on:
    existing tasks keep the k they were made with, so their counters stay true."""
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise ApplicationError(f"these settings cannot be changed: {', '.join(unknown)}", code="invalid_project",
                               details={"field": unknown[0]})
    if "name" in changes and not (changes["name"] or "").strip():
        raise ApplicationError("a project needs a name", code="invalid_project", details={"field": "name"})
    if "responses_per_task" in changes:
        _check_range("responses_per_task", changes["responses_per_task"], 2, 8)
    if "rankings_per_task" in changes:
        _check_range("rankings_per_task", changes["rankings_per_task"], 1, 10)
    if "policy_algorithm" in changes and changes["policy_algorithm"] not in ("ppo", "dpo"):
        raise ApplicationError("policy_algorithm must be ppo or dpo", code="invalid_project",
                               details={"field": "policy_algorithm"})
    for key, value in changes.items():
        setattr(project, key, value.strip() if key == "name" else value)
    project.save(update_fields=list(changes))
    return project


@transaction.atomic
def round_create(*, project: Project, settings: dict | None = None, generate_job_id: int | None = None,
                 status: str = Round.Status.DRAFT) -> Round:
    if status not in Round.Status.values:
        raise ApplicationError(f"unknown round status {status!r}", code="invalid_round")
    # Lock the project row so two concurrent creates do not pick the same number.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    number = (project.rounds.aggregate(n=Max("number"))["n"] or 0) + 1
    return Round.objects.create(project=project, number=number, settings=settings or {},
                                generate_job_id=generate_job_id, stage_job_id=generate_job_id, status=status,
                                stage_changed_at=timezone.now())


@transaction.atomic
def round_update(*, round: Round, generate_job_id: int | None = None, settings: dict | None = None) -> Round:
    """Change a round's data; its stage moves only through round_transition."""
    fields = []
    if generate_job_id is not None:
        round.generate_job_id = generate_job_id
        fields.append("generate_job_id")
    if settings is not None:
        round.settings = settings
        fields.append("settings")
    if fields:
        round.save(update_fields=fields)
    return round


@transaction.atomic
def round_transition(*, round: Round, to: str, job_id: int | None = None, reason: str = "") -> Round:
    """Move a round to stage `to` along ROUND_TRANSITIONS, with the job that runs the new stage
    (if any); to "failed" with the reason, remembering the stage it failed in."""
    locked = Round.objects.select_for_update().get(pk=round.pk)
    if to not in ROUND_TRANSITIONS[locked.status]:
        raise Conflict(f"round {locked.number} is {locked.status}; it cannot go to {to}", code="round_state",
                       details={"status": locked.status, "to": to})
    if to == Round.Status.FAILED:
        locked.failed_stage, locked.reason = locked.status, reason or "failed"
    else:
        locked.failed_stage, locked.reason = "", ""
        locked.stage_job_id = job_id
    locked.status = to
    locked.stage_changed_at = timezone.now()
    locked.save(update_fields=["status", "stage_job_id", "failed_stage", "reason", "stage_changed_at"])
    round.__dict__.update({k: getattr(locked, k) for k in
                           ("status", "stage_job_id", "failed_stage", "reason", "stage_changed_at")})
    return round
