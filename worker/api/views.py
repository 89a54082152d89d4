"""Views of worker's API: each validates input, calls one service or selector, shapes output."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.models import Round
from annotate.permissions import IsAdmin
from annotate.selectors.projects import project_get, round_progress
from config.errors import ApplicationError, NotFound

from ..models import ModelVersion, TrainingJob
from ..selectors import job_metric_series
from ..services.jobs import training_job_get, training_job_launch
from ..services.lifecycle import round_retry, training_job_cancel, training_job_retry
from ..services.models import model_version_import
from ..services.registry import model_version_archive, model_version_promote, model_version_unarchive
from ..services.rounds import round_candidate_promoted, round_start
from . import serializers as s


class ProjectJobsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.JobLaunchIn, responses={202: s.JobOut})
    def post(self, request, project_id: int):
        project = project_get(project_id=project_id)
        data = _valid(s.JobLaunchIn, request.data)
        job = training_job_launch(project=project, kind=data["kind"], config=data["config"],
                                  inputs=data["inputs"], user=request.user,
                                  time_limit_seconds=data.get("time_limit_seconds"))
        return Response(s.JobOut(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=s.JobOut(many=True))
    def get(self, request, project_id: int):
        project = project_get(project_id=project_id)
        return Response(s.JobOut(TrainingJob.objects.filter(project=project)[:200], many=True).data)


class JobsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=s.JobOut(many=True))
    def get(self, request):
        jobs = TrainingJob.objects.all()
        if request.query_params.get("project"):
            jobs = jobs.filter(project_id=_int_param(request, "project"))
        if request.query_params.get("state"):
            jobs = jobs.filter(state=request.query_params["state"])
        return Response(s.JobOut(jobs[:200], many=True).data)


class JobDetailView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=s.JobOut)
    def get(self, request, job_id: int):
        return Response(s.JobOut(training_job_get(job_id=job_id)).data)


class JobMetricsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, job_id: int):
        job = training_job_get(job_id=job_id)
        after = _int_param(request, "after") if request.query_params.get("after") else None
        return Response({"job": job.pk, "state": job.state, "progress": job.progress,
                         "series": job_metric_series(job=job, after_step=after)})


class JobLogsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, job_id: int):
        job = training_job_get(job_id=job_id)
        lines = job.log_lines.all()
        if request.query_params.get("after"):
            lines = lines.filter(pk__gt=_int_param(request, "after"))
        return Response({"job": job.pk, "lines": [
            {"id": line.pk, "at": line.created_at, "level": line.level, "message": line.message}
            for line in lines[:1000]]})


class JobCancelView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=s.JobOut)
    def post(self, request, job_id: int):
        job = training_job_cancel(job=training_job_get(job_id=job_id))
        return Response(s.JobOut(job).data, status=status.HTTP_202_ACCEPTED)


class JobRetryView(APIView):
    """Relaunch a failed or cancelled job: same data, same directory, it continues from its last
    saved state."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=s.JobOut)
    def post(self, request, job_id: int):
        job = training_job_retry(job=training_job_get(job_id=job_id), user=request.user)
        return Response(s.JobOut(job).data, status=status.HTTP_202_ACCEPTED)


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
            versions = versions.filter(project_id=_int_param(request, "project"))
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
        data = _valid(s.PromoteIn, request.data)
        project = project_get(project_id=data["project"]) if data.get("project") else None
        version = model_version_promote(version=_version(model_id), project=project, user=request.user)
        round_candidate_promoted(version=version)
        return Response(s.ModelVersionOut(_fresh(version)).data)


class ModelImportView(APIView):
    """Imports synchronously: a GGUF conversion of a small model takes tens of seconds."""

    permission_classes = [IsAdmin]

    @extend_schema(request=s.ModelImportIn, responses={201: s.ModelVersionOut})
    def post(self, request):
        data = _valid(s.ModelImportIn, request.data)
        version = model_version_import(source=data["source"], name=data.get("name"),
                                       expected_sha256=data.get("sha256"))
        if data.get("project"):
            version.project = project_get(project_id=data["project"])
            version.save(update_fields=["project"])
        return Response(s.ModelVersionOut(version).data, status=status.HTTP_201_CREATED)


class ProjectRoundsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.RoundIn)
    def post(self, request, project_id: int):
        project = project_get(project_id=project_id)
        data = _valid(s.RoundIn, request.data)
        round_obj, job = round_start(project=project, prompts=data["prompts"],
                                     responses_per_prompt=data.get("responses_per_prompt"),
                                     sampling=data["sampling"], auto=data["auto"], user=request.user)
        return Response({"round": _round_out(round_obj), "job": s.JobOut(job).data},
                        status=status.HTTP_202_ACCEPTED)

    def get(self, request, project_id: int):
        project = project_get(project_id=project_id)
        return Response([_round_out(r) for r in Round.objects.filter(project=project).order_by("-number")[:100]])


class RoundRetryView(APIView):
    """Take a failed round back to the stage it failed in (its job resumes)."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None)
    def post(self, request, round_id: int):
        round_obj = Round.objects.filter(pk=round_id).first()
        if round_obj is None:
            raise NotFound(f"round {round_id} does not exist")
        return Response(_round_out(round_retry(round_obj=round_obj, user=request.user)),
                        status=status.HTTP_202_ACCEPTED)


def _round_out(round_obj: Round) -> dict:
    jobs = [{"id": j.pk, "kind": j.kind, "state": j.state, "error": j.error, "attempts": j.attempts}
            for j in round_obj.jobs.order_by("id")]
    return {"id": round_obj.pk, "project": round_obj.project_id, "number": round_obj.number,
            "status": round_obj.status, "stage_job": round_obj.stage_job_id,
            "failed_stage": round_obj.failed_stage, "reason": round_obj.reason,
            "stage_changed_at": round_obj.stage_changed_at, "generate_job": round_obj.generate_job_id,
            "settings": round_obj.settings, "created_at": round_obj.created_at, "jobs": jobs,
            "progress": round_progress(round=round_obj)}


def _fresh(version: ModelVersion) -> ModelVersion:
    return _versions().get(pk=version.pk)


def _version(model_id: int) -> ModelVersion:
    version = _versions().filter(pk=model_id).first()
    if version is None:
        raise NotFound(f"model version {model_id} does not exist")
    return version


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _int_param(request, name: str) -> int:
    from config.errors import ApplicationError

    raw = request.query_params.get(name)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ApplicationError(f"query parameter {name} must be an integer, got {raw!r}") from None



