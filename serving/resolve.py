"""Which policy version a /v1 `model` name means ("latest", a project slug, a version id), and
the list /v1/models shows. Read from the database on every request, so every web process sees a
promotion on its next request without any signal between processes."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from registry.models import ModelVersion

from .errors import bad_request, model_not_found

LATEST = "latest"
DEFAULT_PROJECT_SLUG = "demo"


@dataclass(frozen=True)
class ServedModel:
    """What a request runs on: the version and where its checkpoint lies."""

    requested: str  # the name the client sent, echoed in answers
    version_id: int
    name: str
    path: str  # absolute checkpoint directory
    project_slug: str | None

    @property
    def fingerprint(self) -> str:
        # Sent as OpenAI's system_fingerprint: tells clients which version answered.
        return f"model-version-{self.version_id}"


def _promoted_policies():
    return (ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, promoted=True, project__isnull=False)
            .select_related("project"))


def _served(requested: str, version: ModelVersion) -> ServedModel:
    return ServedModel(
        requested=requested, version_id=version.pk, name=version.name,
        path=str(settings.ARTIFACTS_ROOT / version.path),
        project_slug=version.project.slug if version.project_id else None,
    )


def latest_version() -> ModelVersion | None:
    """The default project's promoted policy: project "demo", else the first project with one."""
    promoted = _promoted_policies()
    return promoted.filter(project__slug=DEFAULT_PROJECT_SLUG).first() or promoted.order_by("project_id").first()


def served_model_resolve(*, model: object) -> ServedModel:
    """The version a `model` name means; 404 (OpenAI's model_not_found) when there is none."""
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required: 'latest', a project slug or a model version id",
                          param="model", code="missing_required_parameter")
    name = model.strip()
    if name == LATEST:
        version = latest_version()
        if version is None:
            raise model_not_found(name, "no project has a promoted policy yet")
        return _served(name, version)
    if name.isdigit():
        version = (ModelVersion.objects.filter(pk=int(name), kind=ModelVersion.Kind.POLICY)
                   .select_related("project").first())
        if version is None:
            raise model_not_found(name, "no policy model version has this id")
        return _served(name, version)
    version = _promoted_policies().filter(project__slug=name).first()
    if version is None:
        raise model_not_found(name, "it is neither 'latest', a project with a promoted policy, "
                                    "nor a model version id")
    return _served(name, version)


def served_model_list() -> list[dict]:
    """OpenAI model objects: "latest", one per project with a promoted policy, one per policy version."""
    rows: list[dict] = []
    latest = latest_version()
    if latest is not None:
        rows.append(_model_object(LATEST, latest))
    for version in _promoted_policies().order_by("project_id"):
        rows.append(_model_object(version.project.slug, version))
    for version in ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).select_related("project").order_by("id"):
        rows.append(_model_object(str(version.pk), version))
    return rows


def _model_object(model_id: str, version: ModelVersion) -> dict:
    return {
        "id": model_id,
        "object": "model",
        "created": int(version.created_at.timestamp()),
        "owned_by": version.project.slug if version.project_id else "rlhf-service",
        # Extensions: what the alias points at today.
        "version_id": version.pk,
        "name": version.name,
        "promoted": version.promoted,
    }
