"""The annotator's ranking page in a real browser: keyboard and mouse rankings, a skip, and
model output that tries to run HTML shown as plain text."""

from __future__ import annotations

import pytest

from .conftest import login, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def shown_ids(page) -> list[int]:
    """Response ids in the order the page shows them (A, B, C, …): the lease shuffles them."""
    page.wait_for_selector("#responses .response")
    return [int(x) for x in page.eval_on_selector_all("#responses .response", "els => els.map(e => e.dataset.id)")]


def wait_for_next_task(page, previous_ids: list[int]) -> None:
    wait_for(page,
        "prev => { const ids = [...document.querySelectorAll('#responses .response')].map(e => Number(e.dataset.id));"
        " return ids.length && ids.join() !== prev.join() || !document.getElementById('empty').hidden; }",
        arg=previous_ids)


def test_annotator_ranks_by_keyboard_and_mouse_and_skips(page, make_user, make_task, screenshot):
    from annotate.models import Lease, Pair, Ranking
    from annotate.services.projects import project_create

    annotator = make_user("rita")
    project = project_create(name="Helpful answers", guidelines="Prefer **correct** and short answers.",
                             responses_per_task=3)
    make_task(project, "What is 2 + 2?", ["It is 4.", "It is 5."])
    make_task(project, "", ["Paris.", "Lyon, probably.", "The capital of France is **Paris**."],
              messages=[{"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": "Capital of France?"}])
    make_task(project, "Write a Python hello world.",
              ["```python\nprint('hello, world')\n```", "Use `echo hello`."])
    make_task(project, "Name a prime number.", ["9", "7", "It depends."])
    make_task(project, "Tell me a secret.", ["No.", "I cannot."])

    login(page, "rita")
    screenshot(page, "01-annotator-home")
    page.get_by_role("link", name="Rank").click()

    # 1. pairwise by keyboard: B is better
    ids = shown_ids(page)
    screenshot(page, "02-rank-pairwise")
    page.keyboard.press("2")
    assert page.get_by_role("button", name="B is better").get_attribute("aria-pressed") == "true"
    page.keyboard.press("Enter")
    expected = [[[ids[1]], [ids[0]]]]

    # 2. three responses by keyboard: C to the top, then B tied with A below it
    wait_for_next_task(page, ids)
    ids = shown_ids(page)
    assert len(ids) == 3
    assert page.locator("#prompt .msg.system").inner_text().strip().endswith("Answer briefly.")
    for key in ["3", "ArrowUp", "ArrowUp", "2", "t"]:
        page.keyboard.press(key)
    assert page.locator("#order li").first.get_attribute("data-id") == str(ids[2])
    screenshot(page, "03-rank-nway-keyboard")
    page.keyboard.press("Enter")
    expected.append([[ids[2]], [ids[0], ids[1]]])

    # 3. pairwise by keyboard, A better, flagged unsafe with a rationale
    wait_for_next_task(page, ids)
    ids = shown_ids(page)
    assert page.locator("#responses pre code").count() >= 1 or page.locator("#responses code").count() >= 1
    page.keyboard.press("1")
    page.keyboard.press("u")
    page.keyboard.press("/")
    page.keyboard.type("the other one is not Python")
    page.keyboard.press("Control+Enter")
    expected.append([[ids[0]], [ids[1]]])

    # 4. three responses by mouse: drag the last one to the top, click Submit
    wait_for_next_task(page, ids)
    ids = shown_ids(page)
    order = page.locator("#order li")
    order.nth(2).drag_to(order.nth(0), target_position={"x": 20, "y": 3})
    wait_for(page, "id => document.querySelector('#order li').dataset.id === String(id)", arg=ids[2])
    screenshot(page, "04-rank-nway-dragged")
    current = [int(x) for x in page.eval_on_selector_all("#order li", "els => els.map(e => e.dataset.id)")]
    page.get_by_role("button", name="Submit").click()
    expected.append([[x] for x in current])
    assert current[0] == ids[2]

    # 5. skip with a reason
    wait_for_next_task(page, ids)
    skipped_ids = shown_ids(page)
    page.get_by_role("button", name="Skip").click()
    page.get_by_label("The prompt is unclear").check()
    screenshot(page, "05-rank-skip-dialog")
    page.get_by_role("button", name="Skip task").click()
    page.wait_for_selector("#empty:not([hidden])")
    screenshot(page, "06-rank-nothing-left")

    rankings = list(Ranking.objects.filter(annotator=annotator).order_by("id"))
    assert [r.groups for r in rankings] == expected
    assert rankings[2].flags == ["unsafe"] and rankings[2].rationale == "the other one is not Python"
    assert all(r.time_spent_ms is not None and r.time_spent_ms > 0 for r in rankings)
    skips = list(Lease.objects.filter(annotator=annotator, status=Lease.Status.SKIPPED))
    assert len(skips) == 1 and skips[0].skip_reason == "The prompt is unclear"
    assert sorted(skips[0].shown_order) == sorted(skipped_ids)
    assert Pair.objects.filter(annotator=annotator).count() == 1 + 2 + 1 + 3

    page.goto("/")
    assert "4" in page.locator(".cards .stat").first.inner_text()


def test_model_output_with_html_is_shown_as_text(page, make_user, make_task, screenshot):
    from annotate.services.projects import project_create

    make_user("sam")
    project = project_create(name="Hostile output")
    script = "<script>window.__pwned = 'script'</script>"
    image = "<img src=x onerror=\"window.__pwned = 'img'\">"
    make_task(project, "Say something <b>bold</b>", [f"Here: {script}", f"And {image} done\n\n# Heading\n\n`<i>code</i>`"])

    login(page, "sam")
    page.goto(f"/projects/{project.pk}/rank")
    page.wait_for_selector("#responses .response")
    page.wait_for_timeout(300)  # give anything that was injected a moment to run
    screenshot(page, "07-rank-hostile-output")

    assert page.evaluate("window.__pwned") is None
    texts = page.locator("#responses .response .body").all_inner_texts()
    joined = "\n".join(texts)
    assert script in joined and image in joined
    assert "<i>code</i>" in joined
    assert page.locator("#responses script, #responses img, #responses [onerror]").count() == 0
    assert page.locator("#responses h1").inner_text() == "Heading"  # Markdown still renders
    assert "<b>bold</b>" in page.locator("#prompt").inner_text()


def test_heartbeats_keep_the_lease_and_an_expired_lease_says_so(page, make_user, make_task, settings, screenshot):
    from datetime import timedelta

    from django.utils import timezone

    from annotate.models import Lease, Ranking
    from annotate.services.projects import project_create

    settings.RLHF_LEASE_SECONDS = 3  # heartbeats every 2 s keep it; without them it would lapse
    annotator = make_user("hal")
    project = project_create(name="Short leases")
    make_task(project, "First", ["one", "two"])
    make_task(project, "Second", ["three", "four"])

    login(page, "hal")
    page.goto(f"/projects/{project.pk}/rank")
    ids = shown_ids(page)
    page.wait_for_timeout(4500)  # longer than the lease: only the heartbeats keep it alive
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_next_task(page, ids)
    assert Ranking.objects.filter(annotator=annotator).count() == 1

    # The lease runs out behind the page's back (the laptop slept): submitting says so plainly.
    ids = shown_ids(page)
    Lease.objects.filter(annotator=annotator, status="active").update(expires_at=timezone.now() - timedelta(seconds=1))
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    notice = page.locator("#notice")
    notice.wait_for()
    assert "ran out" in notice.inner_text() and "nothing was saved" in notice.inner_text()
    wait_for(page, "() => !document.getElementById('workspace').classList.contains('loading')"
                   " && !document.querySelector('#pair-choices [aria-pressed=true]')")
    screenshot(page, "08-rank-lease-expired")
    assert Ranking.objects.filter(annotator=annotator).count() == 1
    # The task went back to the pool and came back to the page under a new, live lease.
    assert Lease.objects.filter(annotator=annotator, status="active", expires_at__gt=timezone.now()).count() == 1


def test_writing_mode_and_improving_the_winner(page, make_user, make_task, screenshot):
    from annotate.models import Demonstration
    from annotate.services.projects import project_create

    annotator = make_user("wren")
    project = project_create(name="Writing")
    task = make_task(project, "Explain `git rebase` briefly.", ["It rewrites history.", "It merges."])

    login(page, "wren")
    page.goto(f"/projects/{project.pk}/rank")
    ids = shown_ids(page)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty:not([hidden])")
    page.get_by_role("button", name="Improve the last winner").click()
    editor = page.get_by_label("Answer (Markdown)")
    winner_text = page.evaluate("() => document.getElementById('write-text').value")
    editor.fill(winner_text + " It replays your commits on top of another base.")
    page.get_by_role("button", name="Save answer").click()
    page.get_by_text("Answer saved").wait_for()
    edit = Demonstration.objects.get(annotator=annotator)
    assert edit.response.parent_response_id == ids[0] and edit.prompt_id == task.prompt_id

    page.goto(f"/projects/{project.pk}/write?prompt={task.prompt_id}")
    page.get_by_label("Your answer (Markdown)").fill("`git rebase` moves commits onto a new base.\n\n<script>x</script>")
    page.locator("#preview code").first.wait_for()
    screenshot(page, "09-writing-mode")
    assert "<script>x</script>" in page.locator("#preview").inner_text()
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"**/projects/{project.pk}/write")
    written = Demonstration.objects.filter(annotator=annotator).order_by("id").last()
    assert written.response.parent_response_id is None and written.response.text.startswith("`git rebase`")
