"""Input validation and output shapes of the model registry API."""

from __future__ import annotations

from rest_framework import serializers

from ..models import ModelVersion


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
