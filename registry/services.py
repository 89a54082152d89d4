"""Model registry writes: import a base model, register a checkpoint a job produced, promote a
policy (the previous one stays for rollback, and each served period is recorded), archive and
unarchive versions; and finding the default base model."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.models import Project
from config.errors import ApplicationError, Conflict

from .models import ModelPromotion, ModelVersion

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def model_name_check(name: str) -> str:
    """A model version's name becomes part of a folder name: letters, digits, '.', '_' and '-',
    starting with a letter or digit (so never '.', '..', a path or an empty name)."""
    if not isinstance(name, str) or not NAME_RULE.match(name) or ".." in name:
        raise ApplicationError(
            f"invalid model name {name!r}: use 1 to 100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no '..', no slashes)", code="invalid_name", details={"name": "invalid"})
    return name


def _default_name(source: str) -> str:
    stem = Path(source).stem if source.endswith(".gguf") else Path(source.rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"


def _fresh_dir(name: str) -> Path:
    """A directory under base/ that no model version uses and that does not exist: the name itself
    the first time, then name-2, name-3, ...; a version's directory belongs to it alone."""
    used = set(ModelVersion.objects.filter(path__startswith="base/").values_list("path", flat=True))
    for n in range(1, 10_000):
        rel = Path("base") / (name if n == 1 else f"{name}-{n}")
        if str(rel) not in used and not (settings.ARTIFACTS_ROOT / rel).exists():
            return rel
    raise ApplicationError(f"no free directory for model {name!r}", code="invalid_name")


def default_model_version() -> ModelVersion | None:
    return (ModelVersion.objects.filter(name=settings.RLHF_DEFAULT_MODEL, kind=ModelVersion.Kind.POLICY,
                                        source__startswith="base:")
            .order_by("id").first())


def model_version_import(*, source: str, name: str | None = None, expected_sha256: str | None = None,
                         base_label: str | None = None) -> ModelVersion:
    """Convert a GGUF file, HF directory or hub id into a new HF directory under ARTIFACTS_ROOT and
    register it as a policy ModelVersion. Importing the same source under the same name again
    returns the existing version (so set-up can run twice); a name another model already has is
    refused. Nothing here ever writes into or deletes a directory a version points to."""
    name = model_name_check(name if name is not None else _default_name(source))
    label = base_label or f"base:{source}"
    existing = ModelVersion.objects.filter(name=name).order_by("id").first()
    if existing is not None:
        folder = settings.ARTIFACTS_ROOT / existing.path
        if existing.source == label and (folder / "config.json").is_file():
            return existing
        if existing.source == label and not folder.exists():
            # Same source, files gone (an artifacts folder wiped under a kept database): convert
            # it again into the same, now empty, place.
            return _import_into(existing, source, expected_sha256)
        raise ApplicationError(f"a model named {name!r} already exists (model version #{existing.pk}); "
                               "choose another name", code="name_taken", details={"name": "taken"}, status=409)
    version = ModelVersion(name=name, path=str(_fresh_dir(name)), kind=ModelVersion.Kind.POLICY, source=label)
    return _import_into(version, source, expected_sha256)


def _import_into(version: ModelVersion, source: str, expected_sha256: str | None) -> ModelVersion:
    from rlhf.model_import import ModelImportError, import_model

    try:
        info = import_model(source, settings.ARTIFACTS_ROOT / version.path, expected_sha256=expected_sha256)
    except ModelImportError as exc:
        raise ApplicationError(str(exc), code="model_import_failed") from exc
    version.sha256 = info.sha256
    version.info = {"architecture": info.architecture, "parameters": info.parameters, "dtype": info.dtype,
                    "eos_token": info.eos_token, "pad_token": info.pad_token}
    with transaction.atomic():
        version.save()
    return version


def model_version_register(*, job, kind: str, rel: str, parents: list[ModelVersion], metrics: dict) -> ModelVersion:
    """Register the checkpoint a training job saved under ARTIFACTS_ROOT/rel, with its parents."""
    with transaction.atomic():
        version = ModelVersion.objects.create(
            name=f"{job.project.slug}-{job.kind}-{job.pk}", kind=kind, path=rel, source=f"job:{job.pk}",
            project=job.project, job=job, metrics=jsonable(metrics),
        )
        version.parents.set(parents)
    return version


def jsonable(metrics: dict) -> dict:
    """The scalar entries of a metrics dict (what a version's metrics field keeps)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool | type(None))}


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
