"""Views of the model registry API: list (archived ones on request), detail, import, promote (and so
roll back), archive and unarchive."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.permissions import IsAdmin
from annotate.selectors.projects import project_get
from config.api_input import int_param, valid_data
from config.errors import ApplicationError, NotFound
from training.services.rounds import policy_promote

from ..models import ModelVersion
from ..services import model_version_archive, model_version_import, model_version_unarchive
from . import serializers as s


def _versions():
    """Model versions with what their serializer reads, in a fixed number of queries."""
    return (ModelVersion.objects.select_related("job").defer("job__inputs", "job__config", "job__progress")
            .prefetch_related(Prefetch("parents", queryset=ModelVersion.objects.only("id")), "promotions"))


class ModelsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=s.ModelVersionOut(many=True),
                   parameters=[OpenApiParameter("archived", str, enum=["exclude", "include", "only"],
                                                default="exclude")])
    def get(self, request):
        versions = _versions()
        archived = request.query_params.get("archived", "exclude")
        if archived not in ("exclude", "include", "only"):
            raise ApplicationError("archived must be exclude, include or only", code="invalid_query",
                                   details={"archived": ["exclude", "include", "only"]})
        if archived == "exclude":
            versions = versions.filter(archived_at__isnull=True)
        elif archived == "only":
            versions = versions.filter(archived_at__isnull=False)
        if request.query_params.get("project"):
            versions = versions.filter(project_id=int_param(request, "project"))
        if request.query_params.get("kind"):
            versions = versions.filter(kind=request.query_params["kind"])
        return Response(s.ModelVersionOut(versions[:500], many=True).data)


class ModelDetailView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=s.ModelVersionOut)
    def get(self, request, model_id: int):
        return Response(s.ModelVersionOut(_version(model_id)).data)


class ModelArchiveView(APIView):
    """Archive (POST) or unarchive (DELETE) a version: hidden from lists, files kept."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=s.ModelVersionOut)
    def post(self, request, model_id: int):
        return Response(s.ModelVersionOut(_fresh(model_version_archive(version=_version(model_id)))).data)

    @extend_schema(request=None, responses=s.ModelVersionOut)
    def delete(self, request, model_id: int):
        return Response(s.ModelVersionOut(_fresh(model_version_unarchive(version=_version(model_id)))).data)


class ModelPromoteView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.PromoteIn, responses=s.ModelVersionOut)
    def post(self, request, model_id: int):
        data = valid_data(s.PromoteIn, request.data)
        project = project_get(project_id=data["project"]) if data.get("project") else None
        version = policy_promote(version=_version(model_id), project=project, user=request.user)
        return Response(s.ModelVersionOut(_fresh(version)).data)


class ModelImportView(APIView):
    """Imports synchronously: a GGUF conversion of a small model takes tens of seconds."""

    permission_classes = [IsAdmin]

    @extend_schema(request=s.ModelImportIn, responses={201: s.ModelVersionOut})
    def post(self, request):
        data = valid_data(s.ModelImportIn, request.data)
        version = model_version_import(source=data["source"], name=data.get("name"),
                                       expected_sha256=data.get("sha256"))
        if data.get("project"):
            version.project = project_get(project_id=data["project"])
            version.save(update_fields=["project"])
        return Response(s.ModelVersionOut(version).data, status=status.HTTP_201_CREATED)


def _fresh(version: ModelVersion) -> ModelVersion:
    return _versions().get(pk=version.pk)


def _version(model_id: int) -> ModelVersion:
    version = _versions().filter(pk=model_id).first()
    if version is None:
        raise NotFound(f"model version {model_id} does not exist")
    return version
