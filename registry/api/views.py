"""Views of the model registry API: list, detail, import, promote (and so roll back)."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.permissions import IsAdmin
from annotate.selectors.projects import project_get
from config.api_input import int_param, valid_data
from config.errors import NotFound
from training.services.rounds import policy_promote

from ..models import ModelVersion
from ..services import model_version_import
from . import serializers as s


class ModelsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=s.ModelVersionOut(many=True))
    def get(self, request):
        versions = ModelVersion.objects.prefetch_related(Prefetch("parents", queryset=ModelVersion.objects.only("id")))
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


class ModelPromoteView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.PromoteIn, responses=s.ModelVersionOut)
    def post(self, request, model_id: int):
        data = valid_data(s.PromoteIn, request.data)
        project = project_get(project_id=data["project"]) if data.get("project") else None
        version = policy_promote(version=_version(model_id), project=project)
        return Response(s.ModelVersionOut(version).data)


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


def _version(model_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=model_id).first()
    if version is None:
        raise NotFound(f"model version {model_id} does not exist")
    return version
