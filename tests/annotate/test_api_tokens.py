"""API tokens (issue #15, item 7): stored as hashes, expiring, revoked by any password change,
listed and revoked by their owner; admins deactivate users and reset passwords. The existing
plain-text tokens of DRF's table are carried over by the migration."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.models import ApiToken
from annotate.services.tokens import api_token_create, token_key_hash

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def with_token(key: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {key}")


def sign_in(username: str, password: str, name: str = "api") -> dict:
    response = APIClient().post("/api/auth/token", {"username": username, "password": password, "name": name},
                                format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_only_a_hash_of_the_key_is_stored(make_user):
    make_user("ann")
    reply = sign_in("ann", "correct-horse-9")
    key = reply["token"]
    token = ApiToken.objects.get(pk=reply["id"])
    assert token.key_hash == token_key_hash(key) and key not in token.key_hash
    with connection.cursor() as cursor:  # nowhere in the table, in any column
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        assert not any(key in str(value) for row in cursor.fetchall() for value in row)
    assert with_token(key).get("/api/me").json()["username"] == "ann"


def test_each_sign_in_makes_a_new_token(make_user):
    make_user("ann")
    first, second = sign_in("ann", "correct-horse-9"), sign_in("ann", "correct-horse-9", name="laptop")
    assert first["token"] != second["token"]
    assert with_token(first["token"]).get("/api/me").status_code == 200
    assert with_token(second["token"]).get("/api/me").status_code == 200


def test_tokens_expire(make_user, settings):
    settings.RLHF_TOKEN_MAX_AGE_DAYS = 30
    user = make_user("ann")
    token, key = api_token_create(user=user)
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = with_token(key).get("/api/me")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


def test_a_password_change_by_any_path_ends_every_token(make_user):
    user = make_user("ann")
    _, key = api_token_create(user=user)
    _, other_key = api_token_create(user=user, name="script")
    # Changed outside the API (the Django admin, manage.py changepassword, a shell)...
    user.set_password("another-horse-10")
    user.save()
    for k in (key, other_key):
        response = with_token(k).get("/api/me")
        assert response.status_code == 401 and "password change" in response.json()["error"]["message"]
    # ...or by the user through the API.
    _, key = api_token_create(user=user)
    client = with_token(key)
    bad = client.post("/api/me/password", {"old_password": "wrong", "new_password": "third-horse-11"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_credentials"
    assert client.post("/api/me/password", {"old_password": "another-horse-10", "new_password": "third-horse-11"},
                       format="json").status_code == 204
    assert client.get("/api/me").status_code == 401
    assert not ApiToken.objects.filter(user=user).exists()
    sign_in("ann", "third-horse-11")


def test_a_browser_session_survives_its_own_password_change(make_user):
    make_user("ann")
    client = APIClient()
    assert client.login(username="ann", password="correct-horse-9")
    csrf_free = client.post("/api/me/password", {"old_password": "correct-horse-9", "new_password": "third-horse-11"},
                            format="json")
    assert csrf_free.status_code == 204
    assert client.get("/api/me").status_code == 200


def test_list_and_revoke_own_tokens(make_user, admin):
    ann, other = make_user("ann"), make_user("other")
    mine = sign_in("ann", "correct-horse-9", name="laptop")
    _, second = api_token_create(user=ann, name="script")
    _, others = api_token_create(user=other)
    client = with_token(mine["token"])
    listed = client.get("/api/auth/tokens").json()
    assert [(t["name"], t["current"]) for t in listed] == [("script", False), ("laptop", True)]
    assert all("token" not in t and "key_hash" not in t and len(t["prefix"]) == 8 for t in listed)
    assert listed[1]["prefix"] == mine["token"][:8]
    # Someone else's token is not theirs to revoke.
    other_id = ApiToken.objects.get(user=other).pk
    assert client.delete(f"/api/auth/tokens/{other_id}").status_code == 404
    assert with_token(others).get("/api/me").status_code == 200
    script_id = listed[0]["id"]
    assert client.delete(f"/api/auth/tokens/{script_id}").status_code == 204
    assert with_token(second).get("/api/me").status_code == 401
    assert client.delete(f"/api/auth/tokens/{script_id}").status_code == 404
    # A new token made from a session or a token, shown once.
    made = client.post("/api/auth/tokens", {"name": "ci"}, format="json")
    assert made.status_code == 201 and with_token(made.json()["token"]).get("/api/me").status_code == 200
    # Admins see and revoke anyone's.
    boss = with_token(api_token_create(user=admin)[1])
    assert [t["name"] for t in boss.get(f"/api/auth/tokens?user={other.pk}").json()] == ["api"]
    assert boss.delete(f"/api/auth/tokens/{other_id}").status_code == 204
    assert with_token(others).get("/api/me").status_code == 401


def test_admin_deactivates_reactivates_and_resets_a_password(make_user, admin):
    ann = make_user("ann")
    _, key = api_token_create(user=ann)
    boss = with_token(api_token_create(user=admin)[1])
    assert with_token(key).patch(f"/api/users/{ann.pk}", {"is_active": False}, format="json").status_code == 403
    off = boss.patch(f"/api/users/{ann.pk}", {"is_active": False}, format="json")
    assert off.status_code == 200 and off.json()["is_active"] is False
    assert with_token(key).get("/api/me").status_code == 401
    refused = APIClient().post("/api/auth/token", {"username": "ann", "password": "correct-horse-9"}, format="json")
    assert refused.status_code == 400
    assert not APIClient().login(username="ann", password="correct-horse-9")
    assert boss.patch(f"/api/users/{ann.pk}", {"is_active": True}, format="json").json()["is_active"] is True
    assert with_token(key).get("/api/me").status_code == 401  # deactivation revoked the tokens for good
    new_key = sign_in("ann", "correct-horse-9")["token"]
    reset = boss.patch(f"/api/users/{ann.pk}", {"password": "reset-horse-12"}, format="json")
    assert reset.status_code == 200
    assert with_token(new_key).get("/api/me").status_code == 401
    sign_in("ann", "reset-horse-12")
    short = boss.patch(f"/api/users/{ann.pk}", {"password": "short"}, format="json")
    assert short.status_code == 400 and short.json()["error"]["code"] == "invalid_password"
    myself = boss.patch(f"/api/users/{admin.pk}", {"is_active": False}, format="json")
    assert myself.status_code == 400
    assert boss.patch("/api/users/999999", {"is_active": False}, format="json").status_code == 404


def test_token_authentication_is_one_query(make_user):
    user = make_user("ann")
    _, key = api_token_create(user=user)
    client = with_token(key)
    client.get("/api/me")  # the first use writes last_used_at
    from rest_framework.test import APIRequestFactory

    from annotate.api.authentication import TokenAuthentication

    request = APIRequestFactory().get("/api/me", HTTP_AUTHORIZATION=f"Token {key}")
    with CaptureQueriesContext(connection) as queries:
        authenticated, token = TokenAuthentication().authenticate(request)
    assert authenticated.pk == user.pk and len(queries) == 1


def test_migration_carries_plain_tokens_over_as_hashes(make_user):
    user = make_user("old-client")
    key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, user_id bigint)")
        cursor.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)",
                       [key, timezone.now(), user.pk])
    migration = importlib.import_module("annotate.migrations.0004_api_tokens")
    from django.apps import apps

    class Editor:  # what the migration uses of a schema editor (SQLite's refuses to open inside a test's transaction)
        def __init__(self):
            self.connection = connection

        def execute(self, sql):
            with connection.cursor() as cursor:
                cursor.execute(sql)

    migration.carry_over_plain_tokens(apps, Editor())
    assert "authtoken_token" not in connection.introspection.table_names()
    assert with_token(key).get("/api/me").json()["username"] == "old-client"
