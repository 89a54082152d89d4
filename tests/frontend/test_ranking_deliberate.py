"""The ranking page asks for a deliberate ranking: N-way tasks start unranked (Submit waits for a
move or an explicit "keep this order"), it says how many tasks are left, marks answers cut off at
the token limit, and lets the annotator revise their last ranking while its task is open."""

from __future__ import annotations

import pytest

from .conftest import login
from .test_ranking_page import shown_ids, wait_for_next_task

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _task(project, prompt, texts, cut=()):
    from annotate.models import Prompt
    from annotate.services.tasks import tasks_create

    p = Prompt.objects.create(project=project, text=prompt)
    return tasks_create(project=project, prompt=p, responses=[
        {"text": t, "source": "model", "sampling": {"max_new_tokens": 8, "finish_reason": "length" if i in cut else "stop"}}
        for i, t in enumerate(texts)])


def test_nway_waits_for_a_deliberate_ranking_and_shows_what_is_left(page, make_user, screenshot):
    from annotate.models import Ranking
    from annotate.services.projects import project_create

    annotator = make_user("nora")
    project = project_create(name="Three ways", responses_per_task=3)
    _task(project, "Name a prime number.", ["9", "7", "A prime is a number divisible only by one and"], cut=(2,))
    _task(project, "Name a colour.", ["Blue.", "Seven.", "Loud."])

    login(page, "nora")
    page.goto(f"/projects/{project.pk}/rank")
    ids = shown_ids(page)
    page.get_by_text("2 left in this project").wait_for()
    submit = page.get_by_role("button", name="Submit")
    assert submit.is_disabled()
    assert "Not ranked yet" in page.locator("#order-status").inner_text()
    assert page.locator("#responses .place:not(:empty)").count() == 0  # nothing looks pre-ranked
    # The answer that hit the token limit says so; the others do not.
    cut = page.locator("#responses .response.truncated")
    assert cut.count() == 1 and "cut off at the token limit" in cut.inner_text()
    screenshot(page, "50-rank-nway-untouched")
    page.keyboard.press("Enter")  # a lazy submit does nothing
    page.get_by_text("Rank first: move a response").wait_for()
    assert not Ranking.objects.exists()

    # Keeping the shown order is allowed, but only on purpose.
    page.get_by_role("button", name="Keep the shown order as my ranking").click()
    assert submit.is_enabled() and page.locator("#order-status").is_hidden()
    submit.click()
    wait_for_next_task(page, ids)
    assert Ranking.objects.get(annotator=annotator).groups == [[i] for i in ids]
    page.get_by_text("1 left in this project").wait_for()

    # A move counts as deliberate too.
    ids = shown_ids(page)
    assert page.get_by_role("button", name="Submit").is_disabled()
    page.keyboard.press("3")
    page.keyboard.press("ArrowUp")
    assert page.get_by_role("button", name="Submit").is_enabled()
    screenshot(page, "51-rank-nway-moved")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty:not([hidden])")
    assert Ranking.objects.filter(annotator=annotator).count() == 2
    page.locator("#progress", has_text="0 left in this project").wait_for()


def test_annotator_revises_the_last_ranking_while_the_task_is_open(page, make_user, screenshot):
    from annotate.models import Pair, Ranking
    from annotate.services.projects import project_create, round_create, round_transition

    annotator = make_user("rex")
    project = project_create(name="Second thoughts")
    round_obj = round_create(project=project)
    round_transition(round=round_obj, to="generating")
    round_transition(round=round_obj, to="annotating")
    first = _task(project, "Is the earth flat?", ["No, it is round.", "Yes."])
    first.round = round_obj
    first.save(update_fields=["round"])
    _task(project, "2 + 2?", ["4", "5"])
    _task(project, "3 + 3?", ["6", "7"])

    login(page, "rex")
    page.goto(f"/projects/{project.pk}/rank")
    ids = shown_ids(page)
    assert page.get_by_role("button", name="Revise my last ranking").is_hidden()
    page.keyboard.press("2")  # oops: B ("Yes." or "No") is better
    page.keyboard.press("Enter")
    wait_for_next_task(page, ids)
    current = shown_ids(page)
    page.locator("#progress", has_text="2 left in this project").wait_for()
    current_task = page.locator("#progress").inner_text()

    page.get_by_role("button", name="Revise my last ranking").click()
    banner = page.locator("#revising")
    assert banner.is_visible() and f"task {first.pk}" in banner.inner_text()
    assert shown_ids(page) == ids
    assert page.get_by_role("button", name="B is better").get_attribute("aria-pressed") == "true"
    page.keyboard.press("1")
    page.get_by_label("Rationale").fill("misclicked")
    screenshot(page, "52-rank-revising")
    page.get_by_role("button", name="Save revision").click()
    page.get_by_text("is revised; the earlier one stays on record").wait_for()
    assert banner.is_hidden() and shown_ids(page) == current  # back on the task in hand
    assert page.locator("#progress").inner_text() == current_task

    old, new = Ranking.objects.filter(annotator=annotator).order_by("id")
    assert old.groups == [[ids[1]], [ids[0]]] and old.superseded_at is not None
    assert new.groups == [[ids[0]], [ids[1]]] and new.revises_id == old.pk and new.rationale == "misclicked"
    assert list(Pair.objects.live().filter(annotator=annotator).values_list("winner_id", flat=True)) == [ids[0]]
    screenshot(page, "53-rank-revised")

    # After a reload the page still offers the revision (the API keeps the last ranking).
    page.reload()
    assert shown_ids(page) == current
    page.get_by_role("button", name="Revise my last ranking").wait_for()

    # Once the round moves on to training, its rankings are final: the page says so.
    round_transition(round=round_obj, to="reward_model")
    page.keyboard.press("z")
    page.get_by_role("button", name="B is better").click()
    page.get_by_role("button", name="Save revision").click()
    notice = page.locator("#notice")
    notice.get_by_text("can no longer be revised").wait_for()
    assert "reward model" in notice.inner_text()
    assert page.get_by_role("button", name="Revise my last ranking").is_hidden()
    assert shown_ids(page) == current
    assert Ranking.objects.live().get(annotator=annotator).pk == new.pk
    screenshot(page, "54-rank-revise-closed")
