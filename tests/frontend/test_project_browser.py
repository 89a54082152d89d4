"""The admin's project page after an import: the counts follow without a reload, and the prompts
(the demo's included) can be paged, searched and opened to see each task's responses, rankings
and who made them."""

from __future__ import annotations

import json

import pytest

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_counts_refresh_after_import_and_prompts_can_be_browsed(page, make_user, tmp_path, screenshot):
    from annotate.models import Prompt
    from annotate.services.leases import task_lease_next
    from annotate.services.projects import project_create
    from annotate.services.rankings import ranking_submit

    make_user("ada", "admin")
    rita = make_user("rita")
    project = project_create(name="Browse me", rankings_per_task=2)
    for i in range(23):
        Prompt.objects.create(project=project, text=f"Warm-up question number {i}", tags=["demo"])

    login(page, "ada")
    page.goto(f"/manage/projects/{project.pk}")
    page.get_by_text("Prompts 1–20 of 23").wait_for()
    assert page.locator("#counts [data-count=prompts]").inner_text() == "23"

    lines = tmp_path / "more.jsonl"
    lines.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "Reverse a list in Python", "responses": ["`xs[::-1]`", "`xs.sort()`"]},
        {"prompt": "Name the largest planet", "responses": ["Jupiter.", "Saturn."]},
    ]) + "\n")
    page.get_by_label("JSONL file").set_input_files(str(lines))
    page.get_by_role("button", name="Import").click()
    page.get_by_text("Imported 2 prompts and 2 tasks from 2 lines.").wait_for()
    # Without a reload: the counts and the browser already know about the new prompts.
    page.locator("#counts [data-count=prompts]", has_text="25").wait_for()
    assert page.locator("#counts [data-count=tasks]").inner_text() == "2"
    page.get_by_text("Prompts 1–20 of 25").wait_for()

    page.get_by_role("button", name="Next").click()
    page.get_by_text("Prompts 21–25 of 25").wait_for()
    assert page.locator("#browse-page").inner_text() == "page 2 of 2"
    assert page.get_by_role("button", name="Next").is_disabled()

    # Someone ranks the planet task; the admin finds it by searching.
    lease = task_lease_next(project=project, annotator=rita)
    while "planet" not in lease.task.prompt.text:
        ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=rita, groups=[[r] for r in lease.shown_order])
        lease = task_lease_next(project=project, annotator=rita)
    jupiter = lease.task.responses.get(text="Jupiter.").pk
    saturn = lease.task.responses.get(text="Saturn.").pk
    ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=rita, groups=[[jupiter], [saturn]],
                   flags=["other"], rationale="Jupiter is the largest")
    page.get_by_label("Search").fill("planet")
    page.get_by_role("button", name="Search").click()
    page.get_by_text("Prompts 1–1 of 1").wait_for()
    row = page.locator(".prompt-row").first
    assert "1 task · 1 ranking" in row.locator("summary").inner_text()
    row.locator("summary").click()
    task = row.locator(".task-view")
    assert "1 of 2 rankings" in task.locator("h4").inner_text() and "open" in task.locator("h4").inner_text()
    ranking_row = task.locator("table.rankings tbody tr").first
    cells = ranking_row.locator("td").all_inner_texts()
    assert cells[0] == "rita" and cells[1] == "A > B" and cells[2] == "other" and cells[3] == "Jupiter is the largest"
    assert "Name the largest planet" in row.locator(".chat").inner_text()
    page.locator("#counts [data-count=rankings]", has_text="2").wait_for(timeout=10_000)  # the 5 s refresh
    screenshot(page, "60-project-browser")

    page.get_by_label("Show", exact=True).select_option("without_tasks")
    page.get_by_text("No prompt matches.").wait_for()  # "planet" is still in the search box
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Search").click()
    page.get_by_text("Prompts 1–20 of 23").wait_for()
