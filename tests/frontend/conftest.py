"""Browser fixtures: Debian's chromium driven by Playwright against pytest-django's live
server, logged-in pages, and screenshots under test-artifacts/screenshots/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "correct-horse-9"
# Without the background-networking flags chromium keeps dialing out, and the closed network
# here refuses it slowly enough to stall page loads.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); run scripts/ensure_chromium.sh")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django's ORM calls made by the
    # test itself would otherwise be refused as "called from an async context".
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 950})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # Anything the Content-Security-Policy refused (an inline script, a remote resource) fails the test.
    pg.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    pg.js_errors = errors
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def make_user(transactional_db):
    from annotate.services.users import user_create

    def make(username: str, role: str = "annotator"):
        return user_create(username=username, password=PASSWORD, role=role)

    return make


def wait_for(page, expression: str, arg=None, timeout: float = 15.0) -> None:
    """page.wait_for_function without its in-page eval, which our CSP (no 'unsafe-eval') refuses:
    the expression is polled from here through the driver, which the page's CSP does not govern."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(50)


def login(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: not url.endswith("/login"))


@pytest.fixture
def make_task(transactional_db):
    from annotate.models import Prompt
    from annotate.services.tasks import tasks_create

    def make(project, prompt: str, texts: list[str], messages: list | None = None):
        p = Prompt.objects.create(project=project, text=prompt if messages is None else "", messages=messages)
        return tasks_create(project=project, prompt=p,
                            responses=[{"text": t, "source": "model", "model_name": "policy-v1"} for t in texts])

    return make
