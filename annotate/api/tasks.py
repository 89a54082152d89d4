"""Annotating: next task, heartbeat, submit a ranking, skip, gold, demonstrations."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound
from config.throttle import Throttled, counter_hit

from ..models import Prompt, RankingTask
from ..permissions import IsAdmin, IsAnnotatorOrAdmin
from ..roles import is_admin
from ..selectors.projects import project_get
from ..selectors.tasks import last_ranking_for, task_as_shown, tasks_remaining_for
from ..selectors.writing import prompt_to_write
from ..services.demonstrations import demonstration_create, prompt_offer_make
from ..services.leases import lease_heartbeat, task_lease_next, task_skip
from ..services.rankings import pairs_from_groups, ranking_revise, ranking_submit
from ..services.tasks import task_gold_set
from . import serializers as s


class NextTaskView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(request=None, responses={200: s.NextTaskReply, 204: None},
                   summary="Lease the next task to rank (the same one while a lease is live)")
    def post(self, request, project_id: int):
        lease = task_lease_next(project=project_id, annotator=request.user)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"task": task_as_shown(lease), "lease": {"id": lease.pk, "expires_at": lease.expires_at}})


class HeartbeatView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(request=None, responses=s.LeaseOut, summary="Keep a lease alive")
    def post(self, request, lease_id: int):
        lease = lease_heartbeat(lease_id=lease_id, annotator=request.user)
        return Response({"id": lease.pk, "expires_at": lease.expires_at})


class RankingCreateView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(request=s.RankingRequest, responses={201: s.RankingReply},
                   summary="Submit a ranking under a lease (sending it again returns the first result)")
    def post(self, request, task_id: int):
        data = s.RankingRequest(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        ranking, _ = ranking_submit(task_id=task_id, lease_id=v["lease"], annotator=request.user,
                                    groups=v["ranking"], flags=v["flags"], rationale=v["rationale"],
                                    time_spent_ms=v["time_spent_ms"])
        return Response({"ranking": ranking.pk, "pairs": len(pairs_from_groups(ranking.groups))},
                        status=status.HTTP_201_CREATED)


class RankingReviseView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(request=s.RevisionRequest, responses={201: s.RevisionReply},
                   summary="Revise your last ranking while its task is still open (the old one is kept)")
    def post(self, request, ranking_id: int):
        data = s.RevisionRequest(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        ranking, _ = ranking_revise(ranking_id=ranking_id, annotator=request.user, groups=v["ranking"],
                                    flags=v["flags"], rationale=v["rationale"], time_spent_ms=v["time_spent_ms"])
        return Response({"ranking": ranking.pk, "revises": ranking.revises_id,
                         "pairs": len(pairs_from_groups(ranking.groups))}, status=status.HTTP_201_CREATED)


class RemainingView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(responses=s.RemainingReply, summary="How many tasks of the project are left for you")
    def get(self, request, project_id: int):
        return Response({"remaining": tasks_remaining_for(project_id=project_id, annotator=request.user)})


class LastRankingView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 204: None},
                   summary="Your last ranking in the project, its task as you saw it, and whether it can be revised")
    def get(self, request, project_id: int):
        last = last_ranking_for(project_id=project_id, annotator=request.user)
        return Response(last) if last is not None else Response(status=status.HTTP_204_NO_CONTENT)


class SkipView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(request=s.SkipRequest, responses=s.SkipReply, summary="Skip a task, with a reason")
    def post(self, request, task_id: int):
        data = s.SkipRequest(data=request.data)
        data.is_valid(raise_exception=True)
        lease = task_skip(task_id=task_id, lease_id=data.validated_data["lease"], annotator=request.user,
                          reason=data.validated_data["reason"])
        return Response({"lease": lease.pk, "status": lease.status})


class GoldView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.GoldRequest, responses=s.GoldRequest, summary="Mark a task's known best response (admin)")
    def post(self, request, task_id: int):
        data = s.GoldRequest(data=request.data)
        data.is_valid(raise_exception=True)
        task = RankingTask.objects.filter(pk=task_id).first()
        if task is None:
            raise NotFound(f"task {task_id} does not exist")
        task = task_gold_set(task=task, response_id=data.validated_data["response"])
        return Response({"response": task.gold_response_id})


class DemonstrationCreateView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(request=s.DemonstrationRequest, responses={201: s.DemonstrationReply},
                   summary="Write the ideal response to a prompt, or an improved edit of a response")
    def post(self, request, prompt_id: int):
        _demonstration_rate_check(request.user)
        data = s.DemonstrationRequest(data=request.data)
        data.is_valid(raise_exception=True)
        prompt = Prompt.objects.filter(pk=prompt_id).first()
        if prompt is None:
            raise NotFound(f"prompt {prompt_id} does not exist")
        demo = demonstration_create(prompt=prompt, annotator=request.user, text=data.validated_data["text"],
                                    based_on_response_id=data.validated_data["based_on_response"],
                                    offer=data.validated_data["offer"])
        return Response({"id": demo.pk, "response": demo.response_id, "prompt": prompt.pk,
                         "based_on_response": demo.response.parent_response_id}, status=status.HTTP_201_CREATED)


def _demonstration_rate_check(user) -> None:
    """RLHF_DEMONSTRATIONS_PER_HOUR per annotator (admins are not limited)."""
    limit = settings.RLHF_DEMONSTRATIONS_PER_HOUR
    if not limit or is_admin(user):
        return
    window = counter_hit(f"demonstrations:{user.pk}", window_seconds=3600)
    if window.count > limit:
        raise Throttled(f"at most {limit} demonstrations an hour; try again in {window.retry_after} s",
                        retry_after=window.retry_after)


class WritingNextView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(parameters=[OpenApiParameter("prompt", int, description="this prompt, if it is the project's"),
                               OpenApiParameter("after", int, description="the next one after this prompt id")],
                   responses={200: s.WritingOut, 204: None},
                   summary="The next prompt to write an ideal answer for, with its offer")
    def get(self, request, project_id: int):
        project = project_get(project_id=project_id)

        def number(name: str) -> int | None:
            raw = request.query_params.get(name)
            return s.IdField().run_validation(raw) if raw else None

        prompt = prompt_to_write(project=project, annotator=request.user, wanted=number("prompt"),
                                 after=number("after"))
        if prompt is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"prompt": {"id": prompt.pk, "messages": prompt.as_messages()},
                         "offer": prompt_offer_make(prompt=prompt, annotator=request.user)})
