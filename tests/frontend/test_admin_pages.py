"""Admin pages in a real browser: create a project, import JSONL (bad lines listed, nothing
imported), export, create an annotator and read the project's annotator statistics."""

from __future__ import annotations

import json

import pytest

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_admin_creates_project_imports_exports_and_manages_annotators(page, make_user, screenshot, tmp_path):
    from django.contrib.auth import get_user_model

    from annotate.models import Project, Prompt, RankingTask

    make_user("ada", "admin")
    login(page, "ada")
    page.get_by_role("link", name="Projects").click()
    page.get_by_label("Name").fill("Code review")
    page.get_by_label("Responses per task").fill("3")
    page.get_by_label("Guidelines for annotators (Markdown)").fill("Prefer **working** code.")
    screenshot(page, "10-admin-projects")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url("**/manage/projects/*")
    project = Project.objects.get(name="Code review")
    assert project.responses_per_task == 3

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\nnot json\n{"prompt": ""}\n{"prompt": "ok", "colour": 1}\n')
    page.get_by_label("JSONL file").set_input_files(str(bad))
    page.get_by_role("button", name="Import").click()
    alert = page.locator("#import-result[role=alert]")
    alert.wait_for()
    text = alert.inner_text()
    assert "line 2:" in text and "line 3:" in text and "line 4:" in text and "line 1:" not in text
    screenshot(page, "11-admin-import-errors")
    assert Prompt.objects.filter(project=project).count() == 0

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "Reverse a list in Python", "responses": ["`xs[::-1]`", "`reversed(xs)`", "`xs.sort()`"]},
        {"messages": [{"role": "user", "content": "Sum 1..10"}], "responses": ["55", "45", "56"], "gold": 0},
        {"prompt": "Explain recursion"},
    ]) + "\n")
    page.get_by_label("JSONL file").set_input_files(str(good))
    page.get_by_role("button", name="Import").click()
    page.get_by_text("Imported 3 prompts and 2 tasks from 3 lines.").wait_for()
    assert RankingTask.objects.filter(project=project).count() == 2
    page.reload()
    screenshot(page, "12-admin-project")

    page.get_by_label("Rankings per task (k)").fill("2")
    page.get_by_label("Self-running rounds train with").select_option("dpo")
    page.get_by_label("An admin approves each new policy before it is promoted").check()
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Settings saved").wait_for()
    project.refresh_from_db()
    assert (project.rankings_per_task, project.policy_algorithm, project.require_approval) == (2, "dpo", True)
    page.get_by_label("Rankings per task (k)").fill("11")  # the form refuses it before any request
    page.get_by_role("button", name="Save settings").click()
    assert page.get_by_label("Rankings per task (k)").evaluate("e => e.checkValidity()") is False
    project.refresh_from_db()
    assert project.rankings_per_task == 2

    with page.expect_download() as info:
        page.get_by_role("link", name="Prompts").click()
    rows = [json.loads(line) for line in open(info.value.path()).read().splitlines()]
    assert [r.get("prompt") for r in rows][0] == "Reverse a list in Python" and len(rows) == 3

    page.get_by_role("link", name="Annotators").first.click()
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill("a-long-password")
    page.get_by_role("button", name="Create user").click()
    page.locator("#users").get_by_role("cell", name="newbie", exact=True).wait_for()
    assert get_user_model().objects.filter(username="newbie").exists()
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill("a-long-password")
    page.get_by_role("button", name="Create user").click()
    assert "already exists" in page.locator("#user-error[role=alert]").inner_text()
    page.locator("#summary .stat").first.wait_for()
    screenshot(page, "13-admin-annotators")


def test_annotators_cannot_open_admin_pages(page, make_user):
    make_user("ann")
    login(page, "ann")
    response = page.goto("/manage/projects")
    assert response.status == 403
    assert page.get_by_role("link", name="Projects").count() == 0
