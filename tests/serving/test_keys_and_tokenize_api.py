"""/api/keys (admins only; the key is shown once and stored hashed) and /api/tokenize."""

from __future__ import annotations

import hashlib

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def test_admin_creates_lists_and_revokes_keys(admin_client, demo):
    from serving.models import APIKey

    created = admin_client.post("/api/keys", {"name": "eval script"}, format="json")
    assert created.status_code == 201, created.content
    key = created.json()["key"]
    row = APIKey.objects.get(pk=created.json()["id"])
    assert row.hashed_key == hashlib.sha256(key.encode()).hexdigest() and key not in row.hashed_key
    assert key.startswith(row.prefix) and created.json()["created_by"] == "admin"

    listed = admin_client.get("/api/keys").json()
    assert [k["name"] for k in listed] == ["eval script"] and "key" not in listed[0]

    models = APIClient().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert models.status_code == 200
    assert admin_client.delete(f"/api/keys/{row.pk}").status_code == 204
    assert admin_client.get("/api/keys").json()[0]["revoked_at"] is not None
    assert APIClient().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401
    assert admin_client.delete(f"/api/keys/{row.pk}").status_code == 204  # revoking twice is fine


def test_key_needs_a_name(admin_client):
    response = admin_client.post("/api/keys", {"name": ""}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"


def test_revoking_an_unknown_key_is_404(admin_client):
    assert admin_client.delete("/api/keys/999999").json()["error"]["code"] == "not_found"


def test_annotators_get_403_and_anonymous_401(annotator, admin_user):
    from serving.keys import api_key_create

    key, _ = api_key_create(name="x", created_by=admin_user)
    anonymous = APIClient()
    signed_in = APIClient()
    signed_in.force_authenticate(annotator)
    for client, status in ((anonymous, 401), (signed_in, 403)):
        assert client.get("/api/keys").status_code == status
        assert client.post("/api/keys", {"name": "mine"}, format="json").status_code == status
        response = client.delete(f"/api/keys/{key.pk}")
        assert response.status_code == status and "error" in response.json()


def test_tokenize_gives_ids_and_pieces(annotator, demo):
    client = APIClient()
    client.force_authenticate(annotator)
    body = client.post("/api/tokenize", {"model": "latest", "text": "the quick brown fox"}, format="json").json()
    assert body["model"] == "latest" and body["version_id"] == demo["a"].pk
    assert "".join(t["piece"] for t in body["tokens"]) == "the quick brown fox"
    assert all(isinstance(t["id"], int) for t in body["tokens"])


def test_tokenize_errors_use_the_api_shape(annotator, demo):
    client = APIClient()
    client.force_authenticate(annotator)
    response = client.post("/api/tokenize", {"model": "nope", "text": "x"}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert APIClient().post("/api/tokenize", {"model": "latest", "text": "x"}, format="json").status_code == 401
