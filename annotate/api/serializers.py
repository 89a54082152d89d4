"""Request and response shapes of the annotate API."""

from __future__ import annotations

from rest_framework import serializers

from ..models import Project, Ranking
from ..roles import ROLES, role_of


class TokenRequest(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False)


class TokenReply(serializers.Serializer):
    token = serializers.CharField()


class UserCreateRequest(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
    password = serializers.CharField(trim_whitespace=False)
    role = serializers.ChoiceField(choices=ROLES, default="annotator")


class UserOut(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.SerializerMethodField()

    def get_role(self, user) -> str:
        return role_of(user)


class ProjectCreateRequest(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=100, required=False, allow_null=True)
    guidelines = serializers.CharField(required=False, allow_blank=True, default="")
    responses_per_task = serializers.IntegerField(required=False, default=2)
    rankings_per_task = serializers.IntegerField(required=False, default=1)
    allow_ties = serializers.BooleanField(required=False, default=True)


class ProjectUpdateRequest(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    guidelines = serializers.CharField(required=False, allow_blank=True)
    responses_per_task = serializers.IntegerField(required=False)
    rankings_per_task = serializers.IntegerField(required=False)
    allow_ties = serializers.BooleanField(required=False)
    policy_algorithm = serializers.ChoiceField(choices=["ppo", "dpo"], required=False)
    require_approval = serializers.BooleanField(required=False)


class ProjectOut(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "name", "slug", "guidelines", "responses_per_task", "rankings_per_task", "allow_ties",
                  "policy_algorithm", "require_approval", "created_at"]


class ProjectCounts(serializers.Serializer):
    prompts = serializers.IntegerField()
    tasks = serializers.IntegerField()
    tasks_complete = serializers.IntegerField()
    rankings = serializers.IntegerField()
    pairs = serializers.IntegerField()
    demonstrations = serializers.IntegerField()


class ProjectDetailOut(ProjectOut):
    counts = serializers.SerializerMethodField()

    class Meta(ProjectOut.Meta):
        fields = [*ProjectOut.Meta.fields, "counts"]

    def get_counts(self, project) -> ProjectCounts:
        return self.context["counts"]


class ImportReply(serializers.Serializer):
    lines = serializers.IntegerField()
    prompts_created = serializers.IntegerField()
    tasks_created = serializers.IntegerField()
    duplicates = serializers.ListField(child=serializers.DictField())


class ResponseOut(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class TaskOut(serializers.Serializer):
    id = serializers.IntegerField()
    prompt_id = serializers.IntegerField()
    prompt = serializers.CharField()
    messages = serializers.ListField(child=serializers.DictField(), allow_null=True)
    responses = ResponseOut(many=True)


class LeaseOut(serializers.Serializer):
    id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class NextTaskReply(serializers.Serializer):
    task = TaskOut()
    lease = LeaseOut()


class LeaseRef(serializers.Serializer):
    lease = serializers.IntegerField()


class RankingRequest(LeaseRef):
    # Kept as raw JSON so the service, which knows the task, names what is wrong with it.
    ranking = serializers.JSONField(help_text="[[response ids], ...] best first; ids in one group are tied")
    flags = serializers.ListField(child=serializers.ChoiceField(choices=Ranking.FLAGS), required=False, default=list)
    rationale = serializers.CharField(required=False, allow_blank=True, default="", max_length=10000)
    time_spent_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, default=None)


class RankingReply(serializers.Serializer):
    ranking = serializers.IntegerField()
    pairs = serializers.IntegerField()


class RevisionRequest(serializers.Serializer):
    ranking = serializers.JSONField(help_text="the new [[response ids], ...] best first")
    flags = serializers.ListField(child=serializers.ChoiceField(choices=Ranking.FLAGS), required=False, default=list)
    rationale = serializers.CharField(required=False, allow_blank=True, default="", max_length=10000)
    time_spent_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, default=None)


class RevisionReply(serializers.Serializer):
    ranking = serializers.IntegerField(help_text="the new ranking")
    revises = serializers.IntegerField(help_text="the ranking it replaced")
    pairs = serializers.IntegerField()


class RemainingReply(serializers.Serializer):
    remaining = serializers.IntegerField(help_text="open tasks this annotator can still rank, the one held included")


class SkipRequest(LeaseRef):
    reason = serializers.CharField(max_length=2000)


class SkipReply(serializers.Serializer):
    lease = serializers.IntegerField()
    status = serializers.CharField()


class GoldRequest(serializers.Serializer):
    response = serializers.IntegerField(allow_null=True)


class DemonstrationRequest(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False)
    based_on_response = serializers.IntegerField(required=False, allow_null=True, default=None)


class DemonstrationReply(serializers.Serializer):
    id = serializers.IntegerField()
    response = serializers.IntegerField()
    prompt = serializers.IntegerField()
    based_on_response = serializers.IntegerField(allow_null=True)
