"""Views of the training API (jobs, job kinds, rounds): each validates input, calls one service or
selector, and shapes output."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.models import Round
from annotate.permissions import IsAdmin
from annotate.selectors.projects import project_get, round_progress
from config.api_input import int_param, valid_data
from config.errors import NotFound

from ..kinds import kinds_describe
from ..models import TrainingJob
from ..selectors import job_metric_series
from ..services.jobs import training_job_get, training_job_launch
from ..services.lifecycle import round_retry, training_job_cancel, training_job_retry
from ..services.rounds import round_start
from . import serializers as s


class ProjectJobsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.JobLaunchIn, responses={202: s.JobOut})
    def post(self, request, project_id: int):
        project = project_get(project_id=project_id)
        data = valid_data(s.JobLaunchIn, request.data)
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
            jobs = jobs.filter(project_id=int_param(request, "project"))
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
        after = int_param(request, "after") if request.query_params.get("after") else None
        return Response({"job": job.pk, "state": job.state, "progress": job.progress,
                         "series": job_metric_series(job=job, after_step=after)})


class JobLogsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, job_id: int):
        job = training_job_get(job_id=job_id)
        lines = job.log_lines.all()
        if request.query_params.get("after"):
            lines = lines.filter(pk__gt=int_param(request, "after"))
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
    saved state. An optional body {"processes": N, "accelerate_config": name} changes how many
    processes a training job runs on."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=s.JobOut)
    def post(self, request, job_id: int):
        launch = request.data if isinstance(request.data, dict) and request.data else None
        job = training_job_retry(job=training_job_get(job_id=job_id), user=request.user, launch=launch)
        return Response(s.JobOut(job).data, status=status.HTTP_202_ACCEPTED)


class JobKindsView(APIView):
    """Every job kind with its config fields: defaults, allowed values and one-line help, read from
    the config classes themselves (what the launch form is built from)."""

    permission_classes = [IsAdmin]

    def get(self, request):
        return Response(kinds_describe())


class ProjectRoundsView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.RoundIn)
    def post(self, request, project_id: int):
        project = project_get(project_id=project_id)
        data = valid_data(s.RoundIn, request.data)
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
