"""Input validation and output shapes of the model registry API."""

from __future__ import annotations

from rest_framework import serializers

from ..models import ModelVersion


class ModelVersionOut(serializers.ModelSerializer):
    parents = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind", "project", "parents", "job", "metrics", "info", "path", "source",
                  "sha256", "created_at", "promoted", "promoted_at"]


class ModelImportIn(serializers.Serializer):
    source = serializers.CharField(help_text="a .gguf file or HF directory on the server, or a hub id")
    name = serializers.CharField(required=False)
    sha256 = serializers.CharField(required=False, min_length=64, max_length=64)
    project = serializers.IntegerField(required=False)


class PromoteIn(serializers.Serializer):
    project = serializers.IntegerField(required=False)
