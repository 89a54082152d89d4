"""Small things a new user trips over: project titles on the home page lead in, an inline error
leaves once the field is fixed (round form, writing mode), and saving an answer says so."""

from __future__ import annotations

import pytest

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_project_title_on_home_is_a_link_to_ranking(page, make_user, make_task, screenshot):
    from annotate.services.projects import project_create

    make_user("rita")
    project = project_create(name="Helpful answers")
    make_task(project, "What is 2 + 2?", ["4", "5"])
    login(page, "rita")
    screenshot(page, "42-annotator-home")
    page.get_by_role("link", name="Helpful answers").click()
    page.wait_for_url(f"**/projects/{project.pk}/rank")
    page.locator("#responses .response").first.wait_for()


def test_writing_mode_error_goes_when_fixed_and_saving_confirms(page, make_user, screenshot):
    from annotate.models import Demonstration, Prompt
    from annotate.services.projects import project_create

    make_user("wren")
    project = project_create(name="Writing")
    first = Prompt.objects.create(project=project, text="Explain recursion in one line.")
    Prompt.objects.create(project=project, text="What is a monad?")
    login(page, "wren")
    page.goto(f"/projects/{project.pk}/write")
    page.get_by_role("button", name="Save and next").click()
    error = page.locator("#error[role=alert]")
    assert error.inner_text() == "Write an answer first."
    page.get_by_label("Your answer (Markdown)").fill("A function that calls itself on a smaller input.")
    assert error.is_hidden()  # gone as soon as the answer is typed
    page.get_by_role("button", name="Save and next").click()
    saved = page.locator("#saved[role=status]")
    saved.wait_for()
    assert saved.inner_text().startswith("Answer saved.") and f"prompt {first.pk}" in saved.inner_text()
    assert "What is a monad?" in page.locator("#prompt").inner_text()
    screenshot(page, "40-writing-saved")
    page.get_by_label("Your answer (Markdown)").fill("A monoid in the category of endofunctors.")
    page.keyboard.press("Control+Enter")
    page.get_by_text("You have written an answer for every prompt").wait_for()
    assert page.locator("#saved").inner_text().startswith("Answer saved.")
    assert Demonstration.objects.filter(project=project).count() == 2
    page.reload()
    assert page.locator("#saved").is_hidden()  # said once, not on every visit


def test_round_form_error_goes_when_the_field_is_fixed(page, make_user, screenshot):
    from annotate.models import Prompt
    from annotate.services.projects import project_create

    make_user("ada", "admin")
    project = project_create(name="Rounds")
    Prompt.objects.create(project=project, text="hello")
    login(page, "ada")
    page.goto(f"/manage/projects/{project.pk}")
    page.get_by_label("Prompts", exact=True).select_option("ids")
    page.get_by_label("Sample size or ids").fill("999999")
    page.get_by_role("button", name="Start round").click()
    error = page.locator("#round-error[role=alert]")
    error.wait_for()
    screenshot(page, "41-round-form-error")
    page.get_by_label("Sample size or ids").fill(str(project.prompts.get().pk))
    assert error.is_hidden()
