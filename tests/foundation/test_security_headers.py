"""Content-Security-Policy, the vendored API docs, /v1 in the schema, and the settings for a TLS
proxy (issue #15, item 11)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from tests.conftest import REPO

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def _csp(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}


def test_pages_and_api_carry_a_csp_that_runs_only_our_scripts():
    for path in ("/login", "/api/schema", "/healthz", "/v1/models"):
        csp = _csp(Client().get(path))
        assert csp["script-src"] == ["'self'"], path
        assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
        assert "https:" not in csp["img-src"]


def test_api_docs_load_nothing_from_elsewhere_and_run_no_inline_script():
    response = Client().get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"(src|href)=\"(https?:)?//", html), html
    assert "cdn.jsdelivr" not in html
    # Every script is a file from our origin: no inline code for the CSP to refuse.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert finders.find(url.removeprefix("/static/")), url
    start = re.findall(r'<script src="(/api/docs[^"]*)"', html)
    assert start and "SwaggerUIBundle" in Client().get(start[0].replace("&amp;", "&")).content.decode()
    assert finders.find("frontend/vendor/swagger-ui/LICENSE")


def test_the_schema_describes_v1():
    schema = json.loads(Client().get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    assert {"/v1/models", "/v1/models/{model}", "/v1/chat/completions", "/v1/completions"} <= set(schema["paths"])
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert "messages" in chat["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(chat["responses"]["429"]["content"]["application/json"]["schema"]["properties"]["error"]
               ["properties"]) == {"message", "type", "param", "code"}
    assert schema["components"]["securitySchemes"]["ApiKeyBearer"]["scheme"] == "bearer"


def _settings_with(env: dict) -> dict:
    code = ("import django, json; django.setup(); from django.conf import settings as s; print(json.dumps({k: "
            "getattr(s, k, None) for k in ('SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', "
            "'SECURE_SSL_REDIRECT', 'SECURE_PROXY_SSL_HEADER')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tls_proxy_settings_come_from_the_environment():
    plain = _settings_with({"RLHF_HTTPS": "", "RLHF_PROXY_SSL_HEADER": ""})
    assert not plain["SESSION_COOKIE_SECURE"] and not plain["SECURE_HSTS_SECONDS"] and not plain["SECURE_PROXY_SSL_HEADER"]
    tls = _settings_with({"RLHF_HTTPS": "true", "RLHF_PROXY_SSL_HEADER": "X-Forwarded-Proto"})
    assert tls["SESSION_COOKIE_SECURE"] and tls["CSRF_COOKIE_SECURE"] and tls["SECURE_SSL_REDIRECT"]
    assert tls["SECURE_HSTS_SECONDS"] == 31_536_000
    assert tls["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_behind_the_proxy_https_requests_get_hsts_and_secure_cookies(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    secure = Client().get("/login", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200 and secure["Strict-Transport-Security"].startswith("max-age=31536000")
    assert secure.cookies["csrftoken"]["secure"]
    plain = Client().get("/login")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    assert Client().get("/healthz").status_code in (200, 503)  # probes over plain http still answer
