"""Account pages in a real browser (issue #15, item 7): a user makes, sees and revokes API tokens
and changes their password; an admin deactivates a user and resets a password."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from .conftest import PASSWORD, login

pytestmark = pytest.mark.browser


def _me(key: str) -> int:
    return APIClient(HTTP_AUTHORIZATION=f"Token {key}").get("/api/me").status_code


def test_user_makes_and_revokes_a_token_and_changes_password(page, make_user, screenshot):
    make_user("ann")
    login(page, "ann")
    page.get_by_role("link", name="My tokens").click()
    page.get_by_label("Name").fill("labelling-script")
    page.get_by_role("button", name="Make a token").click()
    secret = page.locator("#new-token .key-secret")
    secret.wait_for()
    key = secret.inner_text().strip()
    assert _me(key) == 200
    row = page.get_by_role("row").filter(has_text="labelling-script")
    assert key[:8] in row.inner_text() and key not in page.locator("#tokens").inner_text()
    screenshot(page, "account-tokens")
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Revoke token labelling-script").click()
    page.get_by_text("No tokens.").wait_for()
    assert _me(key) == 401

    page.get_by_label("Name").fill("second")
    page.get_by_role("button", name="Make a token").click()
    page.locator("#new-token .key-secret").filter(has_not_text=key).wait_for()
    second = page.locator("#new-token .key-secret").inner_text().strip()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill("another-horse-10")
    page.get_by_role("button", name="Change password").click()
    page.get_by_text("No tokens.").wait_for()
    assert _me(second) == 401
    page.reload()  # this browser's session survived the change
    assert page.get_by_role("heading", name="API tokens and password").is_visible()


def test_admin_deactivates_and_resets_a_user(page, make_user):
    make_user("boss", "admin")
    ann = make_user("ann")
    from annotate.services.tokens import api_token_create

    key = api_token_create(user=ann)[1]
    login(page, "boss")
    page.goto("/manage/annotators")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Deactivate ann").click()
    page.get_by_role("button", name="Reactivate ann").wait_for()
    assert _me(key) == 401
    page.get_by_role("button", name="Reactivate ann").click()
    page.get_by_role("button", name="Deactivate ann").wait_for()
    page.once("dialog", lambda d: d.accept("reset-horse-12"))
    with page.expect_response(lambda r: r.request.method == "PATCH") as reply:
        page.get_by_role("button", name="Reset password of ann").click()
    assert reply.value.status == 200
    ann.refresh_from_db()
    assert ann.is_active and ann.check_password("reset-horse-12")


def test_a_click_before_the_page_script_runs_does_not_submit_natively(page, make_user):
    """CI clicked "Make a token" before tokens.js had attached its handler: the browser submitted
    the form itself (a reload to /tokens?) and the typed name was lost. The page's script is held
    back here so the click surely comes first; it must wait, then make the token."""
    import time

    make_user("ann")
    login(page, "ann")

    def slow(route):
        time.sleep(1.5)
        route.continue_()

    page.route("**/js/tokens.js*", slow)
    page.goto("/tokens", wait_until="commit")
    page.get_by_label("Name").fill("early-click")
    page.get_by_role("button", name="Make a token").click()
    page.locator("#new-token .key-secret").wait_for()
    assert not page.url.endswith("?")
