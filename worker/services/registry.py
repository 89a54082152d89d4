"""Model registry writes: promote a policy (the previous one stays for rollback)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from annotate.models import Project
from config.errors import ApplicationError

from ..models import ModelVersion


@transaction.atomic
def model_version_promote(*, version: ModelVersion, project: Project | None = None) -> ModelVersion:
    """Make `version` the policy its project serves and generates from. Rolling back is promoting
    the earlier version again."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.kind != ModelVersion.Kind.POLICY:
        raise ApplicationError(f"model version {version.pk} is a {version.kind} model; only policies are promoted",
                               code="not_a_policy")
    if project is not None and version.project_id not in (None, project.pk):
        raise ApplicationError(f"model version {version.pk} belongs to project {version.project_id}, "
                               f"not {project.pk}", code="wrong_project")
    project = project or version.project
    if project is None:
        raise ApplicationError(f"model version {version.pk} belongs to no project; say which project serves it",
                               code="no_project")
    # Lock the project's promoted row so two promotions do not race past the unique constraint.
    list(ModelVersion.objects.select_for_update().filter(project=project, promoted=True, kind="policy"))
    ModelVersion.objects.filter(project=project, promoted=True, kind="policy").exclude(pk=version.pk).update(
        promoted=False)
    version.project = project
    version.promoted = True
    version.promoted_at = timezone.now()
    version.save(update_fields=["project", "promoted", "promoted_at"])
    return version
