"""Revising a ranking: the annotator's last ranking of a task that is still open is replaced by a
new row in one transaction; the old one keeps its content (audit) and its pairs (job snapshots);
the live rules stay true (one live ranking per task and annotator, at most k per task); and what
the next-task page shows (responses cut off at their token limit, tasks left)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from annotate.models import Lease, Pair, Ranking, RankingTask
from annotate.selectors.projects import project_counts
from annotate.selectors.tasks import task_as_shown, tasks_remaining_for
from annotate.selectors.training import pair_ids, pairs_rows
from annotate.services.leases import task_lease_next, task_skip
from annotate.services.projects import round_create, round_transition
from annotate.services.rankings import ranking_revise, ranking_submit
from annotate.services.tasks import tasks_create
from config.errors import ApplicationError, Conflict, NotFound

pytestmark = [pytest.mark.sqlite, pytest.mark.django_db]


def rank(project, user, order=None):
    lease = task_lease_next(project=project, annotator=user)
    ids = list(lease.shown_order)
    groups = [[i] for i in (order(ids) if order else ids)]
    ranking, _ = ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=user, groups=groups)
    return ranking


def test_revision_replaces_the_live_ranking_and_keeps_the_old_one(make_project, make_tasks, annotators):
    project = make_project(responses_per_task=3, rankings_per_task=2)
    [task] = make_tasks(project, 1, responses=3)
    ann = annotators[0]
    first = rank(project, ann)
    snapshot = pair_ids(project=project)
    counts = project_counts(project=project)
    reverse = [[g[0]] for g in reversed(first.groups)]

    new, created = ranking_revise(ranking_id=first.pk, annotator=ann, groups=reverse, rationale="misread C")
    assert created and new.revises_id == first.pk and new.slot == first.slot and new.lease_id == first.lease_id
    old = Ranking.objects.get(pk=first.pk)
    assert old.groups == first.groups and old.superseded_at is not None  # content untouched, auditable
    assert list(Ranking.objects.live().filter(task=task)) == [Ranking.objects.get(pk=new.pk)]
    # Pairs: the live ones are the revision's; the old ones stay for snapshots that hold them.
    assert set(Pair.objects.live().filter(task=task).values_list("ranking_id", flat=True)) == {new.pk}
    assert Pair.objects.filter(ranking=first).count() == 3
    assert sorted(pair_ids(project=project)) != sorted(snapshot) and len(pair_ids(project=project)) == 3
    assert {r["ranking"] for r in pairs_rows(project=project, ids=snapshot)} == {first.pk}
    winners = {(p.winner_id, p.loser_id) for p in Pair.objects.live()}
    assert (reverse[0][0], reverse[-1][0]) in winners
    # Nothing counted twice: the task's counters and the project's counts are as before.
    task.refresh_from_db()
    assert (task.rankings_done, task.claimed) == (1, 1)
    assert project_counts(project=project) == counts

    # Sent again (a double click): the same revision back, no third row.
    again, created = ranking_revise(ranking_id=first.pk, annotator=ann, groups=reverse)
    assert not created and again.pk == new.pk
    with pytest.raises(Conflict) as exc:
        ranking_revise(ranking_id=first.pk, annotator=ann, groups=first.groups)
    assert exc.value.code == "already_revised"
    # The revision itself can be revised (it is now the last ranking).
    third, _ = ranking_revise(ranking_id=new.pk, annotator=ann, groups=first.groups)
    assert Ranking.objects.live().get(task=task, annotator=ann).pk == third.pk
    assert Ranking.objects.filter(task=task, annotator=ann).count() == 3


def test_only_your_last_ranking_of_an_open_task(make_project, make_tasks, annotators):
    project = make_project()
    make_tasks(project, 3)
    ann, other = annotators[:2]
    earlier = rank(project, ann)
    last = rank(project, ann)
    with pytest.raises(Conflict) as exc:
        ranking_revise(ranking_id=earlier.pk, annotator=ann, groups=earlier.groups[::-1])
    assert exc.value.code == "not_last_ranking"
    with pytest.raises(NotFound):
        ranking_revise(ranking_id=last.pk, annotator=other, groups=last.groups[::-1])
    with pytest.raises(ApplicationError) as exc:
        ranking_revise(ranking_id=last.pk, annotator=ann, groups=[[last.groups[0][0]]])
    assert exc.value.code == "invalid_ranking" and "missing" in exc.value.message
    # A skip in between does not change which ranking is the last one.
    lease = task_lease_next(project=project, annotator=ann)
    task_skip(task_id=lease.task_id, lease_id=lease.pk, annotator=ann, reason="unclear")
    ranking_revise(ranking_id=last.pk, annotator=ann, groups=last.groups[::-1])


def test_a_round_that_moved_on_to_training_closes_its_tasks(make_project, make_tasks, annotators):
    project = make_project()
    round_obj = round_create(project=project)
    round_transition(round=round_obj, to="generating")
    round_transition(round=round_obj, to="annotating")
    make_tasks(project, 1, round=round_obj)
    ann = annotators[0]
    ranking = rank(project, ann)
    ranking_revise(ranking_id=ranking.pk, annotator=ann, groups=ranking.groups[::-1])  # still annotating
    live = Ranking.objects.live().get(annotator=ann)
    round_transition(round=round_obj, to="reward_model")
    with pytest.raises(Conflict) as exc:
        ranking_revise(ranking_id=live.pk, annotator=ann, groups=ranking.groups)
    assert exc.value.code == "task_closed" and "reward model" in exc.value.message


def test_the_database_keeps_one_live_ranking_per_task_and_annotator(make_project, make_tasks, annotators):
    project = make_project()
    make_tasks(project, 1)
    ranking = rank(project, annotators[0])
    twin = {"project_id": project.pk, "task_id": ranking.task_id, "lease_id": ranking.lease_id,
            "annotator_id": ranking.annotator_id, "groups": ranking.groups, "shown_order": ranking.shown_order}
    for slot in (ranking.slot, ranking.slot + 1):  # same slot, or a second live one in a new slot
        with pytest.raises(IntegrityError), transaction.atomic():
            Ranking.objects.create(slot=slot, **twin)
    Ranking.objects.filter(pk=ranking.pk).update(superseded_at=ranking.created_at)
    Ranking.objects.create(slot=ranking.slot, revises=ranking, **twin)  # fine once the first is superseded


def test_the_shown_task_marks_responses_cut_off_at_the_token_limit(make_project, annotators):
    from annotate.models import Prompt

    project = make_project()
    prompt = Prompt.objects.create(project=project, text="Tell a long story")
    tasks_create(project=project, prompt=prompt, responses=[
        {"text": "Once upon a time", "sampling": {"max_new_tokens": 4, "finish_reason": "length"}},
        {"text": "The end.", "sampling": {"max_new_tokens": 4, "finish_reason": "stop"}},
    ])
    lease = task_lease_next(project=project, annotator=annotators[0])
    shown = {r["text"]: r["truncated"] for r in task_as_shown(lease)["responses"]}
    assert shown == {"Once upon a time": True, "The end.": False}
    with pytest.raises(ApplicationError):
        tasks_create(project=project, prompt=prompt, responses=[
            {"text": "a", "sampling": {"finish_reason": "tired"}}, {"text": "b"}])


def test_tasks_remaining_counts_what_this_annotator_can_still_take(make_project, make_tasks, annotators):
    project = make_project(rankings_per_task=2)
    make_tasks(project, 3)
    ann, other = annotators[:2]
    assert tasks_remaining_for(project_id=project.pk, annotator=ann) == 3
    rank(project, ann)
    assert tasks_remaining_for(project_id=project.pk, annotator=ann) == 2
    task_lease_next(project=project, annotator=ann)  # holding one: still counted
    assert tasks_remaining_for(project_id=project.pk, annotator=ann) == 2
    assert tasks_remaining_for(project_id=project.pk, annotator=other) == 3


def test_revision_and_remaining_through_the_api(make_project, make_tasks, annotators):
    project = make_project(responses_per_task=3)
    make_tasks(project, 2, responses=3)
    ann, other = annotators[:2]
    client = APIClient()
    client.force_authenticate(ann)
    assert client.get(f"/api/projects/{project.pk}/tasks/remaining").json() == {"remaining": 2}
    nxt = client.post(f"/api/projects/{project.pk}/tasks/next", {}, format="json").json()
    ids = [r["id"] for r in nxt["task"]["responses"]]
    assert all(r["truncated"] is False for r in nxt["task"]["responses"])
    made = client.post(f"/api/tasks/{nxt['task']['id']}/rankings",
                       {"lease": nxt["lease"]["id"], "ranking": [[i] for i in ids]}, format="json").json()
    url = f"/api/rankings/{made['ranking']}/revise"
    reply = client.post(url, {"ranking": [[ids[2]], [ids[0], ids[1]]], "rationale": "C is best"}, format="json")
    assert reply.status_code == 201, reply.json()
    body = reply.json()
    assert body["revises"] == made["ranking"] and body["pairs"] == 2
    assert Ranking.objects.get(pk=body["ranking"]).rationale == "C is best"
    assert RankingTask.objects.get(pk=nxt["task"]["id"]).rankings_done == 1

    bad = client.post(f"/api/rankings/{body['ranking']}/revise", {"ranking": [[ids[0]]]}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_ranking"
    stale = client.post(url, {"ranking": [[i] for i in ids]}, format="json")
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "already_revised"
    theirs = APIClient()
    theirs.force_authenticate(other)
    assert theirs.post(f"/api/rankings/{body['ranking']}/revise", {"ranking": [[i] for i in ids]},
                       format="json").status_code == 404
    assert APIClient().post(url, {"ranking": [[i] for i in ids]}, format="json").status_code in (401, 403)
    assert Lease.objects.get(pk=nxt["lease"]["id"]).status == "submitted"


def test_last_ranking_through_the_api_survives_a_reload(make_project, make_tasks, annotators):
    project = make_project(responses_per_task=3)
    make_tasks(project, 2, responses=3)
    ann = annotators[0]
    client = APIClient()
    client.force_authenticate(ann)
    assert client.get(f"/api/projects/{project.pk}/rankings/last").status_code == 204
    ranking = rank(project, ann)
    last = client.get(f"/api/projects/{project.pk}/rankings/last").json()
    assert last["id"] == ranking.pk and last["groups"] == ranking.groups and last["revisable"] is True
    assert [r["id"] for r in last["task"]["responses"]] == ranking.shown_order
    assert set(last["task"]["responses"][0]) == {"id", "text", "truncated"}  # blind, as when ranked
    revised, _ = ranking_revise(ranking_id=ranking.pk, annotator=ann, groups=ranking.groups[::-1])
    assert client.get(f"/api/projects/{project.pk}/rankings/last").json()["id"] == revised.pk
