"""Projects: create, list, detail with counts, import, export, stats, the prompt browser."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser, FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError, NotFound
from config.parsers import JSONParser

from ..models import Round
from ..permissions import IsAdmin, IsAnnotatorOrAdmin
from ..selectors.browse import FILTERS, MAX_PAGE_SIZE, PAGE_SIZE, prompts_page
from ..selectors.exports import FORMATS, export_rows
from ..selectors.projects import project_counts, project_get, project_list
from ..selectors.stats import project_stats
from ..services.imports import prompts_import
from ..services.projects import project_create, project_update
from . import serializers as s


class ProjectsView(APIView):
    def get_permissions(self):
        return [IsAdmin()] if self.request.method == "POST" else [IsAnnotatorOrAdmin()]

    @extend_schema(responses=s.ProjectOut(many=True), summary="All projects")
    def get(self, request):
        return Response(s.ProjectOut(project_list(), many=True).data)

    @extend_schema(request=s.ProjectCreateRequest, responses={201: s.ProjectOut}, summary="Create a project (admin)")
    def post(self, request):
        data = s.ProjectCreateRequest(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_create(**data.validated_data)
        return Response(s.ProjectOut(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailView(APIView):
    def get_permissions(self):
        return [IsAdmin()] if self.request.method == "PATCH" else [IsAnnotatorOrAdmin()]

    @extend_schema(request=s.ProjectUpdateRequest, responses=s.ProjectDetailOut,
                   summary="Change a project's settings (admin)")
    def patch(self, request, project_id: int):
        project = project_get(project_id=project_id)
        data = s.ProjectUpdateRequest(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = project_update(project=project, **data.validated_data)
        return Response(s.ProjectDetailOut(project, context={"counts": project_counts(project=project)}).data)

    @extend_schema(responses=s.ProjectDetailOut, summary="A project with its counts")
    def get(self, request, project_id: int):
        project = project_get(project_id=project_id)
        return Response(s.ProjectDetailOut(project, context={"counts": project_counts(project=project)}).data)


class NDJSONParser(BaseParser):
    """Hands the request through unread; the import service streams it line by line."""

    media_type = "application/x-ndjson"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream if stream is not None else []


def _capped(lines, limit: int):
    """The lines of an import body, refused with a 413 once more than `limit` bytes arrived (a
    chunked body has no Content-Length to check up front)."""
    seen = 0
    for line in lines:
        seen += len(line)
        if seen > limit:
            raise _too_large(limit)
        yield line


def _too_large(limit: int) -> ApplicationError:
    return ApplicationError(f"The import is larger than the limit of {limit} bytes (RLHF_IMPORT_MAX_BYTES); "
                            "split the file.", code="body_too_large", status=413)


def _drain(stream, limit: int, chunk: int = 1 << 16) -> None:
    """Read what is left of a refused body (at most `limit` bytes, unparsed) before answering: a
    server that closes a connection with unread bytes resets it, and the client then loses the
    end of the answer (a garbage import stops parsing at its last reported error)."""
    left = limit
    while stream is not None and left > 0:
        data = stream.read(min(chunk, left))
        if not data:
            return
        left -= len(data)


class ProjectImportView(APIView):
    permission_classes = [IsAdmin]
    parser_classes = [NDJSONParser, MultiPartParser, FormParser, JSONParser]

    @extend_schema(
        request={"multipart/form-data": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}},
                 "application/x-ndjson": OpenApiTypes.STR},
        parameters=[OpenApiParameter("round", int, description="put the imported tasks in this round")],
        responses={201: s.ImportReply, 413: None},
        summary="Import prompts (and tasks) from JSONL, all or nothing (admin)",
    )
    def post(self, request, project_id: int):
        limit = settings.RLHF_IMPORT_MAX_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:  # refused before a byte of the body is read
            raise _too_large(limit)
        project = project_get(project_id=project_id)
        round_obj = None
        if request.query_params.get("round"):
            round_id = s.IdField().run_validation(request.query_params["round"])
            round_obj = Round.objects.filter(pk=round_id, project=project).first()
            if round_obj is None:
                raise NotFound(f"round {round_id} is not a round of project {project.pk}")
        if request.content_type.startswith(NDJSONParser.media_type):
            lines = request.data
        elif "file" in request.FILES:
            lines = request.FILES["file"]
        else:
            raise ApplicationError('send a JSONL file as multipart field "file" or an application/x-ndjson body',
                                   code="invalid_import")
        try:
            result = prompts_import(project=project, lines=_capped(lines, limit), round=round_obj)
        except ApplicationError:
            _drain(request.stream, limit)
            raise
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)


class IgnoreFormatParam(DefaultContentNegotiation):
    """`?format=` names the export format here, not a DRF renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ProjectExportView(APIView):
    permission_classes = [IsAdmin]
    content_negotiation_class = IgnoreFormatParam

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=FORMATS, default="pairs"),
                     OpenApiParameter("consensus", bool, description="one aggregated ranking per task")],
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR},
        summary="Stream the project's data as JSONL (admin)",
    )
    def get(self, request, project_id: int):
        project = project_get(project_id=project_id)
        fmt = request.query_params.get("format", "pairs")
        if fmt not in FORMATS:
            raise ApplicationError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}",
                                   code="invalid_format")
        consensus = request.query_params.get("consensus", "") in ("1", "true", "yes")
        rows = export_rows(project=project, format=fmt, consensus=consensus)
        body = (json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
        response = StreamingHttpResponse(body, content_type="application/x-ndjson; charset=utf-8")
        suffix = "-consensus" if consensus else ""
        response["Content-Disposition"] = f'attachment; filename="{project.slug}-{fmt}{suffix}.jsonl"'
        return response


class ProjectStatsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="Agreement, gold accuracy, time, skips and flags (admin)")
    def get(self, request, project_id: int):
        return Response(project_stats(project=project_get(project_id=project_id)))


def _positive_int(request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ApplicationError(f"query parameter {name} must be a positive integer, got {raw!r}",
                               code="invalid_query", details={name: "not a positive integer"})
    return int(raw)


class ProjectPromptsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(
        parameters=[OpenApiParameter("q", str, description="text to find in the prompt, or a prompt id"),
                    OpenApiParameter("status", str, enum=FILTERS, default="all"),
                    OpenApiParameter("page", int, default=1),
                    OpenApiParameter("page_size", int, default=PAGE_SIZE, description=f"at most {MAX_PAGE_SIZE}")],
        responses=OpenApiTypes.OBJECT,
        summary="A page of the project's prompts with their tasks, responses and rankings (admin)",
    )
    def get(self, request, project_id: int):
        project = project_get(project_id=project_id)
        status_filter = request.query_params.get("status", "all")
        if status_filter not in FILTERS:
            raise ApplicationError(f"unknown status filter {status_filter!r}; use one of {', '.join(FILTERS)}",
                                   code="invalid_query", details={"status": list(FILTERS)})
        return Response(prompts_page(project=project, q=request.query_params.get("q", ""), status=status_filter,
                                     page=_positive_int(request, "page", 1),
                                     page_size=_positive_int(request, "page_size", PAGE_SIZE)))
