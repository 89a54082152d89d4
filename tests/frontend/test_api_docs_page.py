"""/api/docs in a real browser with no network beyond this server (issue #15, item 11): Swagger UI
from our vendored copy, drawn under our Content-Security-Policy without a violation, /v1 listed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_api_docs_render_offline_under_the_csp(page, live_server, screenshot):
    violations: list[str] = []
    outside: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(live_server.url)
            and not req.url.startswith("data:") else None)
    page.goto("/api/docs")
    page.get_by_text("/v1/chat/completions").first.wait_for()
    page.get_by_text("/api/auth/token", exact=True).first.wait_for()
    screenshot(page, "api-docs")
    assert not violations, violations
    assert not outside, outside
