"""Input validation and output shapes of the training API."""

from __future__ import annotations

from rest_framework import serializers

from ..models import TrainingJob


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


class RoundIn(serializers.Serializer):
    prompts = serializers.JSONField(required=False, default="unused")
    responses_per_prompt = serializers.IntegerField(required=False, min_value=2, max_value=8)
    sampling = serializers.DictField(required=False, default=dict)
    auto = serializers.DictField(required=False, default=dict)
