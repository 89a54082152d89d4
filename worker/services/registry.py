"""Model registry writes: promote a policy (the previous one stays for rollback, and each served
period is recorded), archive and unarchive versions."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from annotate.models import Project
from config.errors import ApplicationError, Conflict

from ..models import ModelPromotion, ModelVersion


@transaction.atomic
def model_version_promote(*, version: ModelVersion, project: Project | None = None, user=None) -> ModelVersion:
    """Make `version` the policy its project serves and generates from. Rolling back is promoting
    an earlier version again; the history of served periods says which versions were served."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.kind != ModelVersion.Kind.POLICY:
        raise ApplicationError(f"model version {version.pk} is a {version.kind} model; only policies are promoted",
                               code="not_a_policy")
    if version.archived_at is not None:
        raise Conflict(f"model version {version.pk} is archived; unarchive it before promoting it", code="archived")
    if project is not None and version.project_id not in (None, project.pk):
        raise ApplicationError(f"model version {version.pk} belongs to project {version.project_id}, "
                               f"not {project.pk}", code="wrong_project")
    project = project or version.project
    if project is None:
        raise ApplicationError(f"model version {version.pk} belongs to no project; say which project serves it",
                               code="no_project")
    # Lock the project's promoted row so two promotions do not race past the unique constraint.
    list(ModelVersion.objects.select_for_update().filter(project=project, promoted=True, kind="policy"))
    now = timezone.now()
    if version.promoted and version.project_id == project.pk:
        if not ModelPromotion.objects.filter(project=project, ended_at__isnull=True).exists():
            ModelPromotion.objects.create(project=project, version=version, promoted_at=version.promoted_at or now)
        return version  # already served: nothing changes
    ModelVersion.objects.filter(project=project, promoted=True, kind="policy").exclude(pk=version.pk).update(
        promoted=False)
    ModelPromotion.objects.filter(project=project, ended_at__isnull=True).update(ended_at=now)
    served_before = ModelPromotion.objects.filter(project=project, version=version).exists()
    ModelPromotion.objects.create(project=project, version=version, promoted_at=now, rollback=served_before,
                                  promoted_by=user if getattr(user, "is_authenticated", False) else None)
    version.project = project
    version.promoted = True
    version.promoted_at = now
    version.save(update_fields=["project", "promoted", "promoted_at"])
    return version


@transaction.atomic
def model_version_archive(*, version: ModelVersion) -> ModelVersion:
    """Hide a version from lists and pickers. Nothing is deleted: its directory and its place in the
    lineage stay, and unarchiving brings it back. The served policy cannot be archived."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.promoted:
        raise Conflict(f"model version {version.pk} is the policy its project serves; promote another one "
                       "before archiving it", code="promoted")
    if version.archived_at is None:
        version.archived_at = timezone.now()
        version.save(update_fields=["archived_at"])
    return version


@transaction.atomic
def model_version_unarchive(*, version: ModelVersion) -> ModelVersion:
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.archived_at is not None:
        version.archived_at = None
        version.save(update_fields=["archived_at"])
    return version
