"""Input validation and output shapes of worker's API."""

from __future__ import annotations

from rest_framework import serializers

from ..models import ModelVersion, TrainingJob


class JobLaunchIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingJob.Kind.values)
    config = serializers.DictField(required=False, default=dict)
    inputs = serializers.DictField(required=False, default=dict)
    time_limit_seconds = serializers.IntegerField(required=False, min_value=10, max_value=30 * 24 * 3600,
                                                  help_text="wall time of one run (default RLHF_JOB_TIME_LIMIT_SECONDS)")


class JobOut(serializers.ModelSerializer):
    class Meta:
        model = TrainingJob
        fields = ["id", "project", "round", "kind", "state", "progress", "config", "inputs", "outputs", "error",
                  "cancel_requested", "worker_hostname", "attempts", "time_limit_seconds", "created_at", "started_at",
                  "finished_at", "heartbeat_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        # The snapshot can hold thousands of ids; the job view shows counts, the ids stay stored.
        inputs = dict(data["inputs"] or {})
        for key in ("pair_ids", "demonstration_ids", "prompt_ids"):
            if isinstance(inputs.get(key), list):
                inputs[key.replace("_ids", "_count")] = len(inputs.pop(key))
        data["inputs"] = inputs
        return data


class ModelVersionOut(serializers.ModelSerializer):
    """A version with its lineage facts: the periods it was served, and what made it (the job's kind
    and how many examples it trained on). Views prefetch `promotions` and select `job`."""

    parents = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    served = serializers.SerializerMethodField()
    served_before = serializers.SerializerMethodField()
    made_by = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind", "project", "parents", "job", "metrics", "info", "path", "source",
                  "sha256", "created_at", "promoted", "promoted_at", "archived_at", "served", "served_before",
                  "made_by"]

    def get_served(self, version) -> list[dict]:
        return [{"from": p.promoted_at, "until": p.ended_at, "rollback": p.rollback}
                for p in version.promotions.all()]

    def get_served_before(self, version) -> bool:
        """Served at some time and not now: the versions "Roll back" offers."""
        return not version.promoted and any(p.ended_at is not None for p in version.promotions.all())

    def get_made_by(self, version) -> dict | None:
        job = version.job
        if job is None:
            return None
        return {"job": job.pk, "kind": job.kind, "examples": (job.outputs or {}).get("examples"),
                "round": job.round_id}


class ModelImportIn(serializers.Serializer):
    source = serializers.CharField(help_text="a .gguf file or HF directory on the server, or a hub id")
    name = serializers.CharField(required=False)
    sha256 = serializers.CharField(required=False, min_length=64, max_length=64)
    project = serializers.IntegerField(required=False)


class PromoteIn(serializers.Serializer):
    project = serializers.IntegerField(required=False)


class RoundIn(serializers.Serializer):
    prompts = serializers.JSONField(required=False, default="unused")
    responses_per_prompt = serializers.IntegerField(required=False, min_value=2, max_value=8)
    sampling = serializers.DictField(required=False, default=dict)
    auto = serializers.DictField(required=False, default=dict)
