"""The admin's prompt browser API: paged, searchable (text, chat messages, id), filtered by task
state, each prompt with its tasks, responses and rankings with their annotators; admins only."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from annotate.models import Prompt
from annotate.services.leases import task_lease_next
from annotate.services.rankings import ranking_revise, ranking_submit
from annotate.services.tasks import tasks_create

pytestmark = [pytest.mark.sqlite, pytest.mark.django_db]


@pytest.fixture
def browsed(make_project, annotators):
    project = make_project(rankings_per_task=2)
    for i in range(25):
        Prompt.objects.create(project=project, text=f"plain question {i}")
    chat = Prompt.objects.create(project=project, messages=[{"role": "user", "content": "What is a zebra?"}])
    tasks_create(project=project, prompt=chat, responses=[
        {"text": "A striped horse.", "model_name": "policy-v1", "sampling": {"finish_reason": "stop"}},
        {"text": "An animal that", "model_name": "policy-v1", "sampling": {"finish_reason": "length"}}])
    ann = annotators[0]
    lease = task_lease_next(project=project, annotator=ann)
    ranking, _ = ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=ann,
                                groups=[[r] for r in lease.shown_order], rationale="first try")
    ranking_revise(ranking_id=ranking.pk, annotator=ann, groups=[[r] for r in reversed(lease.shown_order)])
    return project, chat, ann


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_pages_and_totals(browsed, admin):
    project, _, _ = browsed
    client = _client(admin)
    first = client.get(f"/api/projects/{project.pk}/prompts").json()
    assert (first["count"], first["page"], first["pages"], len(first["results"])) == (26, 1, 2, 20)
    second = client.get(f"/api/projects/{project.pk}/prompts?page=2").json()
    assert len(second["results"]) == 6 and second["results"][-1]["messages"][0]["content"] == "What is a zebra?"
    past_the_end = client.get(f"/api/projects/{project.pk}/prompts?page=9").json()
    assert past_the_end["page"] == 2
    bad = client.get(f"/api/projects/{project.pk}/prompts?page=zero")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"
    assert client.get(f"/api/projects/{project.pk}/prompts?status=odd").status_code == 400


def test_search_and_filters_and_the_task_detail(browsed, admin):
    project, chat, ann = browsed
    client = _client(admin)
    found = client.get(f"/api/projects/{project.pk}/prompts", {"q": "ZEBRA"}).json()
    assert found["count"] == 1
    [row] = found["results"]
    [task] = row["tasks"]
    assert [r["truncated"] for r in task["responses"]] == [False, True]
    assert task["rankings_done"] == 1 and task["rankings_needed"] == 2 and not task["complete"]
    old, new = task["rankings"]
    assert old["annotator"] == new["annotator"] == ann.username
    assert old["superseded"] and not new["superseded"] and new["revises"] == old["id"]
    assert old["rationale"] == "first try"
    assert client.get(f"/api/projects/{project.pk}/prompts", {"q": f"#{chat.pk}"}).json()["count"] == 1
    assert client.get(f"/api/projects/{project.pk}/prompts", {"q": "question 1"}).json()["count"] == 11
    assert client.get(f"/api/projects/{project.pk}/prompts", {"status": "with_tasks"}).json()["count"] == 1
    assert client.get(f"/api/projects/{project.pk}/prompts", {"status": "open"}).json()["count"] == 1
    assert client.get(f"/api/projects/{project.pk}/prompts", {"status": "complete"}).json()["count"] == 0
    assert client.get(f"/api/projects/{project.pk}/prompts", {"status": "without_tasks"}).json()["count"] == 25


def test_only_admins_browse(browsed, annotators):
    project, _, _ = browsed
    reply = _client(annotators[1]).get(f"/api/projects/{project.pk}/prompts")
    assert reply.status_code == 403 and "error" in reply.json()
    assert _client(annotators[1]).get("/api/projects/99999/prompts").status_code == 403
