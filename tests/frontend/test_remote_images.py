"""Images in model output (issue #15, item 10): by default one that would load from another site
is shown as a link and never fetched, so no beacon learns when a task is shown; a project can
allow them."""

from __future__ import annotations

import pytest

from .conftest import login

pytestmark = pytest.mark.browser

BEACON = "https://beacon.invalid/pixel.png?task=1"
OWN = "/static/frontend/vendor/swagger-ui/favicon-32x32.png"


def _rank_page(page, project, requests: list[str]):
    page.on("request", lambda req: requests.append(req.url) if "beacon.invalid" in req.url else None)
    page.goto(f"/projects/{project.pk}/rank")
    page.wait_for_selector("#responses .response")
    page.wait_for_timeout(300)


def test_remote_images_are_links_unless_the_project_allows_them(page, make_user, make_task, screenshot):
    from annotate.services.projects import project_create, project_update

    make_user("ivy")
    project = project_create(name="Images")
    make_task(project, f"Describe ![in the prompt]({BEACON}&in=prompt)",
              [f"Look: ![tracking pixel]({BEACON})", f"Our own: ![icon]({OWN}) and ![dot](data:image/gif;base64,R0lGODlhAQABAAAAACw=)"])
    login(page, "ivy")
    requests: list[str] = []
    _rank_page(page, project, requests)
    screenshot(page, "rank-remote-image-as-link")
    assert requests == []  # nothing was fetched from the other site
    link = page.locator("#responses a.remote-image").first
    assert link.get_attribute("href") == BEACON and "tracking pixel" in link.inner_text()
    assert page.locator("#prompt a.remote-image").count() == 1
    assert page.locator(f'#responses img[src="{OWN}"]').count() == 1  # our own images still show
    assert page.locator('#responses img[src^="data:"]').count() == 1

    project_update(project=project, allow_remote_images=True)
    requests.clear()
    page.reload()
    page.wait_for_selector("#responses .response")
    page.locator(f'#responses img[src="{BEACON}"]').wait_for(state="attached")
    page.wait_for_timeout(300)
    assert any(url.startswith("https://beacon.invalid/") for url in requests)  # allowed: it is fetched
