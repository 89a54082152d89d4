"""Request and response shapes of the annotate API."""

from __future__ import annotations

from rest_framework import serializers

from config.converters import MAX_ID

from ..models import Project, Ranking
from ..roles import ROLES, role_of


class IdField(serializers.IntegerField):
    """A row id sent in a body: out of the id columns' range it is a 400 here, not an overflow in SQL."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class TokenRequest(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(trim_whitespace=False, max_length=4096)
    name = serializers.CharField(max_length=100, required=False, default="api", help_text="what the token is for")


class TokenReply(serializers.Serializer):
    token = serializers.CharField(help_text="the key itself, shown this once")
    id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class TokenCreateRequest(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class TokenOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField()
    current = serializers.SerializerMethodField(help_text="the token this request came with")

    def get_current(self, token) -> bool:
        return token.pk == self.context.get("current_id")


class UserUpdateRequest(serializers.Serializer):
    is_active = serializers.BooleanField(required=False)
    password = serializers.CharField(trim_whitespace=False, max_length=4096, required=False,
                                     help_text="a new password; the user's tokens and sessions end")
    role = serializers.ChoiceField(choices=ROLES, required=False)


class PasswordChangeRequest(serializers.Serializer):
    old_password = serializers.CharField(trim_whitespace=False, max_length=4096)
    new_password = serializers.CharField(trim_whitespace=False, max_length=4096)


class UserCreateRequest(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
    password = serializers.CharField(trim_whitespace=False, max_length=4096)
    role = serializers.ChoiceField(choices=ROLES, default="annotator")


class UserOut(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.SerializerMethodField()
    is_active = serializers.BooleanField()

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
    allow_remote_images = serializers.BooleanField(
        required=False, help_text="show images from other sites in model output (off: they are links)")


class ProjectOut(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "name", "slug", "guidelines", "responses_per_task", "rankings_per_task", "allow_ties",
                  "policy_algorithm", "require_approval", "allow_remote_images", "created_at"]


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
    lease = IdField()


class RankingRequest(LeaseRef):
    # Kept as raw JSON so the service, which knows the task, names what is wrong with it.
    ranking = serializers.JSONField(help_text="[[response ids], ...] best first; ids in one group are tied")
    flags = serializers.ListField(child=serializers.ChoiceField(choices=Ranking.FLAGS), required=False, default=list,
                                  max_length=len(Ranking.FLAGS))
    rationale = serializers.CharField(required=False, allow_blank=True, default="", max_length=10000)
    # The column's range (PositiveIntegerField): about 24 days, more than any one task takes.
    time_spent_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**31 - 1,
                                             default=None)


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
    response = IdField(allow_null=True)


class DemonstrationRequest(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False, help_text="at most RLHF_DEMONSTRATION_MAX_CHARS characters")
    based_on_response = IdField(required=False, allow_null=True, default=None)
    offer = serializers.CharField(required=False, allow_blank=True, default="", max_length=200,
                                  help_text="the offer writing mode gave with the prompt (not needed for a prompt "
                                            "of a task you were given)")


class WritingOut(serializers.Serializer):
    prompt = serializers.DictField(help_text="{id, messages}")
    offer = serializers.CharField(help_text="send it back with the demonstration")


class DemonstrationReply(serializers.Serializer):
    id = serializers.IntegerField()
    response = serializers.IntegerField()
    prompt = serializers.IntegerField()
    based_on_response = serializers.IntegerField(allow_null=True)
