"""No answer tells a client where the server's files lie (issue #15, item 9): the /v1 error of a
model whose checkpoint is missing, the /api/tokenize error an annotator gets, the anonymous
/healthz, and any /api error that quotes a path."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def assert_no_server_paths(text: str) -> None:
    for root in (settings.ARTIFACTS_ROOT, settings.DATA_DIR, settings.BASE_DIR):
        assert str(root) not in text, text


def test_v1_error_for_a_missing_checkpoint_names_no_path(demo, api_key, broken_artifacts):
    response = Client().post("/v1/chat/completions", json.dumps({"model": "latest", "messages": [
        {"role": "user", "content": "hi"}]}), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert response.status_code == 503
    assert_no_server_paths(response.content.decode())
    assert "cannot be loaded" in response.json()["error"]["message"]


def test_tokenize_error_an_annotator_sees_names_no_path(demo, annotator, broken_artifacts):
    demo["a"].path = "policies/deleted"  # a checkpoint directory that is gone altogether
    demo["a"].save()
    client = APIClient()
    client.force_authenticate(annotator)
    response = client.post("/api/tokenize", {"model": "latest", "text": "hi"}, format="json")
    assert response.status_code == 503
    assert_no_server_paths(response.content.decode())


def test_anonymous_healthz_names_no_path(demo, broken_artifacts, settings):
    from worker.models import ModelVersion

    ModelVersion.objects.create(name=settings.RLHF_DEFAULT_MODEL, kind="policy", path="base/gone", source="base:test")
    body = Client().get("/healthz").content.decode()
    assert "model files missing" in body and "base/gone" in body
    assert_no_server_paths(body)


def test_api_errors_quoting_a_server_path_are_scrubbed(settings):
    from config.errors import ApplicationError, api_exception_handler

    exc = ApplicationError(f"cannot read {settings.ARTIFACTS_ROOT / 'runs' / 'x'}",
                           details={"path": str(settings.DATA_DIR / "db.sqlite3")})
    body = api_exception_handler(exc, {}).data
    assert body["error"]["message"] == "cannot read <artifacts>/runs/x"
    assert body["error"]["details"] == {"path": "<data>/db.sqlite3"}
