"""API wiring: the permission matrix on every endpoint, the error shape, the main flow."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.models import ApiToken, Lease
from annotate.services.tokens import api_token_create, token_key_hash

pytestmark = pytest.mark.django_db

NDJSON = "application/x-ndjson"


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
    return client


def assert_error_shape(response, status: int, code: str | None = None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture
def world(admin, make_user, make_project, make_tasks):
    project = make_project(responses_per_task=3, rankings_per_task=2)
    tasks = make_tasks(project, 3, responses=3)
    ann, other = make_user("ann"), make_user("other")
    lease_resp = client_for(ann).post(f"/api/projects/{project.pk}/tasks/next")
    assert lease_resp.status_code == 200
    return {"admin": admin, "annotator": ann, "other": other, "anon": None, "project": project, "tasks": tasks,
            "next": lease_resp.json()}


def _ranking(w):
    return [[r["id"]] for r in w["next"]["task"]["responses"]]


# name, method, path(w), body(w) or None, content type, expected status per role
MATRIX = [
    ("users list", "get", lambda w: "/api/users", None, None, dict(anon=401, annotator=200, other=200, admin=200)),
    ("users create", "post", lambda w: "/api/users",
     lambda w: {"username": "newbie", "password": "long-enough-1", "role": "annotator"}, "json",
     dict(anon=401, annotator=403, other=403, admin=201)),
    ("me", "get", lambda w: "/api/me", None, None, dict(anon=401, annotator=200, other=200, admin=200)),
    ("projects list", "get", lambda w: "/api/projects", None, None,
     dict(anon=401, annotator=200, other=200, admin=200)),
    ("projects create", "post", lambda w: "/api/projects", lambda w: {"name": "Another"}, "json",
     dict(anon=401, annotator=403, other=403, admin=201)),
    ("project detail", "get", lambda w: f"/api/projects/{w['project'].pk}", None, None,
     dict(anon=401, annotator=200, other=200, admin=200)),
    ("import", "post", lambda w: f"/api/projects/{w['project'].pk}/import",
     lambda w: b'{"prompt": "fresh"}\n', NDJSON, dict(anon=401, annotator=403, other=403, admin=201)),
    ("export", "get", lambda w: f"/api/projects/{w['project'].pk}/export?format=pairs", None, None,
     dict(anon=401, annotator=403, other=403, admin=200)),
    ("stats", "get", lambda w: f"/api/projects/{w['project'].pk}/stats", None, None,
     dict(anon=401, annotator=403, other=403, admin=200)),
    ("next", "post", lambda w: f"/api/projects/{w['project'].pk}/tasks/next", None, "json",
     dict(anon=401, annotator=200, other=200, admin=200)),
    ("heartbeat", "post", lambda w: f"/api/leases/{w['next']['lease']['id']}/heartbeat", None, "json",
     dict(anon=401, annotator=200, other=409, admin=409)),
    ("rank", "post", lambda w: f"/api/tasks/{w['next']['task']['id']}/rankings",
     lambda w: {"lease": w["next"]["lease"]["id"], "ranking": _ranking(w)}, "json",
     dict(anon=401, annotator=201, other=409, admin=409)),
    ("skip", "post", lambda w: f"/api/tasks/{w['next']['task']['id']}/skip",
     lambda w: {"lease": w["next"]["lease"]["id"], "reason": "unclear"}, "json",
     dict(anon=401, annotator=200, other=409, admin=409)),
    ("gold", "post", lambda w: f"/api/tasks/{w['next']['task']['id']}/gold",
     lambda w: {"response": w["next"]["task"]["responses"][0]["id"]}, "json",
     dict(anon=401, annotator=403, other=403, admin=200)),
    ("demonstration", "post", lambda w: f"/api/prompts/{w['next']['task']['prompt_id']}/demonstrations",
     # "other" was never shown the prompt (issue #15: demonstrations only for prompts shown)
     lambda w: {"text": "An ideal answer."}, "json", dict(anon=401, annotator=201, other=403, admin=201)),
]


@pytest.mark.parametrize("role", ["anon", "annotator", "other", "admin"])
@pytest.mark.parametrize("name, method, path, body, content_type, expected", MATRIX, ids=[m[0] for m in MATRIX])
def test_permission_matrix(world, role, name, method, path, body, content_type, expected):
    client = client_for(world[role])
    kwargs = {}
    if body is not None:
        payload = body(world)
        if content_type == NDJSON:
            kwargs = {"data": payload, "content_type": NDJSON}
        else:
            kwargs = {"data": payload, "format": "json"}
    response = getattr(client, method)(path(world), **kwargs)
    assert response.status_code == expected[role], (name, role, response.content[:300])
    if response.status_code >= 400:
        assert_error_shape(response, expected[role])


def test_token_endpoint(admin):
    client = APIClient()
    ok = client.post("/api/auth/token", {"username": admin.username, "password": "correct-horse-9"}, format="json")
    assert ok.status_code == 200
    key = ok.json()["token"]
    assert ApiToken.objects.get(user=admin).key_hash == token_key_hash(key)
    me = APIClient(HTTP_AUTHORIZATION=f"Token {key}").get("/api/me").json()
    assert me["role"] == "admin"
    bad = client.post("/api/auth/token", {"username": admin.username, "password": "nope"}, format="json")
    assert_error_shape(bad, 400, "invalid_credentials")
    missing = client.post("/api/auth/token", {"username": admin.username}, format="json")
    assert assert_error_shape(missing, 400, "validation_error")["details"]["password"]


def test_token_authentication_refuses_unknown_tokens_and_inactive_users(make_user):
    user = make_user("tokened")
    client = client_for(user)
    assert client.get("/api/me").json()["username"] == "tokened"
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert "Invalid token" in assert_error_shape(wrong.get("/api/me"), 401)["message"]
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert "inactive" in assert_error_shape(client.get("/api/me"), 401)["message"]


def test_superuser_is_admin_and_users_listing(make_user, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="x" * 10)
    ann = make_user("someone")
    client = client_for(root)
    created = client.post("/api/users", {"username": "boss", "password": "long-enough-1", "role": "admin"},
                          format="json")
    assert created.status_code == 201 and created.json()["role"] == "admin"
    assert {u["username"] for u in client.get("/api/users").json()} >= {"root", "someone", "boss"}
    assert [u["username"] for u in client_for(ann).get("/api/users").json()] == ["someone"]
    dup = client.post("/api/users", {"username": "boss", "password": "long-enough-1"}, format="json")
    assert_error_shape(dup, 409, "user_exists")
    weak = client.post("/api/users", {"username": "weak", "password": "short"}, format="json")
    assert_error_shape(weak, 400, "invalid_password")


def test_ranking_flow_and_its_errors(world):
    w = world
    ann, other = client_for(w["annotator"]), client_for(w["other"])
    task, lease = w["next"]["task"], w["next"]["lease"]
    assert set(task["responses"][0]) == {"id", "text", "truncated"}  # blind: no lineage reaches the annotator
    again = ann.post(f"/api/projects/{w['project'].pk}/tasks/next").json()
    assert again["lease"]["id"] == lease["id"] and again["task"]["id"] == task["id"]
    ids = [r["id"] for r in task["responses"]]
    url = f"/api/tasks/{task['id']}/rankings"

    err = assert_error_shape(ann.post(url, {"lease": lease["id"], "ranking": [[ids[0]], [ids[1]], [999999]]},
                                      format="json"), 400, "invalid_ranking")
    assert "999999" in err["message"] and err["details"]["unknown"] == [999999]
    err = assert_error_shape(ann.post(url, {"lease": lease["id"], "ranking": [[ids[0]], [ids[1]]]}, format="json"),
                             400, "invalid_ranking")
    assert "missing" in err["message"]
    assert_error_shape(ann.post(url, {"lease": lease["id"]}, format="json"), 400, "validation_error")
    assert_error_shape(ann.post(url, {"lease": lease["id"], "ranking": [[i] for i in ids], "flags": ["odd"]},
                                format="json"), 400, "validation_error")

    body = {"lease": lease["id"], "ranking": [[ids[0], ids[1]], [ids[2]]], "flags": ["refusal"],
            "rationale": "first two equally good", "time_spent_ms": 1234}
    first = ann.post(url, body, format="json")
    assert first.status_code == 201 and first.json()["pairs"] == 2
    replay = ann.post(url, body, format="json")
    assert replay.status_code == 201 and replay.json() == first.json()
    assert_error_shape(other.post(url, body, format="json"), 409, "lease_not_yours")
    assert_error_shape(ann.post(f"/api/leases/{lease['id']}/heartbeat"), 409, "lease_submitted")

    # The other annotator's lease expires: 409 on submit.
    theirs = other.post(f"/api/projects/{w['project'].pk}/tasks/next").json()
    Lease.objects.filter(pk=theirs["lease"]["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    late = other.post(f"/api/tasks/{theirs['task']['id']}/rankings",
                      {"lease": theirs["lease"]["id"], "ranking": [[r["id"]] for r in theirs["task"]["responses"]]},
                      format="json")
    assert_error_shape(late, 409, "lease_expired")


def test_no_ties_project_and_204_when_done(admin, make_user, make_project, make_tasks):
    project = make_project(allow_ties=False)
    make_tasks(project, 1)
    ann = client_for(make_user("solo"))
    nxt = ann.post(f"/api/projects/{project.pk}/tasks/next").json()
    ids = [r["id"] for r in nxt["task"]["responses"]]
    tie = ann.post(f"/api/tasks/{nxt['task']['id']}/rankings", {"lease": nxt["lease"]["id"], "ranking": [ids]},
                   format="json")
    assert "does not allow ties" in assert_error_shape(tie, 400, "invalid_ranking")["message"]
    ok = ann.post(f"/api/tasks/{nxt['task']['id']}/rankings",
                  {"lease": nxt["lease"]["id"], "ranking": [[i] for i in ids]}, format="json")
    assert ok.status_code == 201
    assert ann.post(f"/api/projects/{project.pk}/tasks/next").status_code == 204
    assert_error_shape(ann.post("/api/projects/987654/tasks/next"), 404, "not_found")


def test_project_detail_counts(world):
    detail = client_for(world["admin"]).get(f"/api/projects/{world['project'].pk}").json()
    assert detail["counts"] == {"prompts": 3, "tasks": 3, "tasks_complete": 0, "rankings": 0, "pairs": 0,
                                "demonstrations": 0}
    created = client_for(world["admin"]).post("/api/projects", {"name": "Bad", "responses_per_task": 12},
                                              format="json")
    assert_error_shape(created, 400, "invalid_project")


def test_schema_and_docs(admin):
    client = client_for(admin)
    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/projects/{project_id}/tasks/next" in paths and "/api/tasks/{task_id}/rankings" in paths
    client.force_login(admin)
    assert client.get("/api/docs").status_code == 200
    # The description of the API is public; its data is not.
    anonymous = APIClient()
    assert anonymous.get("/api/schema").status_code == 200 and anonymous.get("/api/docs").status_code == 200
    assert anonymous.get("/api/projects").status_code == 401


def test_project_settings_patch(admin, world):
    project_id = world["project"].pk
    client = client_for(admin)
    changed = client.patch(f"/api/projects/{project_id}", {"rankings_per_task": 3, "policy_algorithm": "dpo",
                                                           "require_approval": True}, format="json")
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["rankings_per_task"], body["policy_algorithm"], body["require_approval"]) == (3, "dpo", True)
    assert_error_shape(client.patch(f"/api/projects/{project_id}", {"responses_per_task": 9}, format="json"),
                       400, "invalid_project")
    assert_error_shape(client.patch(f"/api/projects/{project_id}", {"policy_algorithm": "sgd"}, format="json"),
                       400, "validation_error")
    assert client_for(world["annotator"]).patch(f"/api/projects/{project_id}", {"allow_ties": False},
                                                format="json").status_code == 403
