"""One error shape per surface, whatever the cause (issue #15, item 8): /api answers
{"error": {"code", "message", "details"}}, /v1 OpenAI's {"error": {"message", "type", "param",
"code"}}, pages a styled page; never Django's bare HTML, and never a 500 for bad input."""

from __future__ import annotations

import json

import pytest
from django.test import Client

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]

HUGE = "99999999999999999999"
BIG_ID = str(2**63)  # 19 digits, one past the id columns' range


def api_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"]
    return body["error"]


def v1_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def styled_page(response, status: int) -> str:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "frontend/css/app.css" in html, html[:300]  # our layout, not Django's bare page
    return html


@pytest.fixture
def users(django_user_model, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from annotate.services.users import token_obtain, user_create

    user_create(username="ann", password="annotator-pw-1")
    user_create(username="boss", password="admin-pw-12", role="admin")
    return {"ann": token_obtain(username="ann", password="annotator-pw-1"),
            "boss": token_obtain(username="boss", password="admin-pw-12")}


def client(token: str | None = None, **kw) -> Client:
    c = Client(raise_request_exception=False, **kw)
    if token:
        c.defaults["HTTP_AUTHORIZATION"] = f"Token {token}"
    return c


@pytest.mark.parametrize("path", [f"/api/leases/{HUGE}/heartbeat", f"/api/leases/{BIG_ID}/heartbeat",
                                  f"/api/tasks/{HUGE}/rankings", f"/api/tasks/{BIG_ID}/skip",
                                  f"/api/prompts/{HUGE}/demonstrations", f"/api/projects/{HUGE}/tasks/next",
                                  f"/api/jobs/{HUGE}/cancel", f"/api/keys/{BIG_ID}"])
def test_out_of_range_ids_in_urls_are_404s(users, path):
    response = client(users["boss"]).post(path, {}, content_type="application/json")
    if response.status_code == 405:  # DELETE-only endpoints
        response = client(users["boss"]).delete(path)
    assert api_error(response, 404)["code"] == "not_found"


def test_out_of_range_ids_in_bodies_are_400s(users):
    c = client(users["ann"])
    for body in ({"lease": int(HUGE), "ranking": [[1], [2]]}, {"lease": 2**63, "ranking": [[1], [2]]},
                 {"lease": 1, "ranking": [[1], [2]], "time_spent_ms": 2**40}):
        assert api_error(c.post("/api/tasks/1/rankings", body, content_type="application/json"),
                         400)["code"] == "validation_error"
    error = api_error(c.post("/api/prompts/1/demonstrations", {"text": "x", "based_on_response": int(HUGE)},
                             content_type="application/json"), 400)
    assert error["code"] == "validation_error"


def test_unknown_api_url_is_json(users):
    assert api_error(client(users["ann"]).get("/api/no-such-thing"), 404)["code"] == "not_found"
    assert api_error(client().get("/api/no-such-thing"), 404)["code"] == "not_found"


def test_body_over_the_limit_is_413_on_api_and_v1(users, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    big = json.dumps({"name": "x" * 3 * 1024 * 1024})
    error = api_error(client(users["boss"]).post("/api/projects", big, content_type="application/json"), 413)
    assert error["code"] == "body_too_large" and str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in error["message"]
    from worker.services.keys import api_key_create

    key = api_key_create(name="t")[1]
    body = json.dumps({"model": "latest", "messages": [{"role": "user", "content": "x" * 3 * 1024 * 1024}]})
    response = Client(raise_request_exception=False).post("/v1/chat/completions", body,
                                                          content_type="application/json",
                                                          HTTP_AUTHORIZATION=f"Bearer {key}")
    assert v1_error(response, 413)["code"] == "body_too_large"


def test_deeply_nested_json_is_a_400(users):
    deep = "[" * 100_000 + "]" * 100_000
    error = api_error(client(users["ann"]).post("/api/tasks/1/rankings", deep, content_type="application/json"), 400)
    assert error["code"] == "parse_error"
    from worker.services.keys import api_key_create

    key = api_key_create(name="t")[1]
    response = Client(raise_request_exception=False).post("/v1/chat/completions", deep, content_type="application/json",
                                                          HTTP_AUTHORIZATION=f"Bearer {key}")
    assert v1_error(response, 400)["code"] == "invalid_json"


def test_bad_host_header_answers_in_each_surface_shape(users):
    c = client(users["ann"])
    assert api_error(c.get("/api/projects", HTTP_HOST="evil.example"), 400)["code"] == "bad_request"
    v1_error(c.get("/v1/models", HTTP_HOST="evil.example"), 400)
    styled_page(c.get("/login", HTTP_HOST="evil.example"), 400)


def test_unhandled_exception_is_a_json_500_without_details(users, monkeypatch):
    from annotate.api import projects

    def broken():
        raise RuntimeError("secret internals /srv/artifacts/x")

    monkeypatch.setattr(projects, "project_list", broken)
    response = client(users["ann"]).get("/api/projects")
    error = api_error(response, 500)
    assert error["code"] == "internal_error" and "secret" not in response.content.decode()


def test_pages_get_styled_403_404_500_and_csrf_pages(users, monkeypatch):
    c = client()
    c.login(username="ann", password="annotator-pw-1")
    styled_page(c.get("/no-such-page"), 404)
    styled_page(c.get(f"/projects/{HUGE}/rank"), 404)
    assert "Only admins" in styled_page(c.get("/manage/projects"), 403)
    from frontend import views

    def broken(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(views, "project_list", broken)
    html = styled_page(c.get("/"), 500)
    assert "secret" not in html
    strict = Client(enforce_csrf_checks=True)
    assert "CSRF" in styled_page(strict.post("/login", {"username": "ann", "password": "x"}), 403)
