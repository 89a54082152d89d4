"""Business rules of leases, rankings, pairs, gold, demonstrations, rounds (on services)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate.models import Lease, Pair, Ranking, RankingTask, Response
from annotate.selectors.projects import round_is_complete
from annotate.services.demonstrations import demonstration_create, prompt_offer_make
from annotate.services.leases import lease_heartbeat, task_lease_next, task_skip
from annotate.services.projects import project_create, round_create
from annotate.services.rankings import pairs_from_groups, ranking_submit, ranking_validate
from annotate.services.tasks import task_gold_set, tasks_create
from config.errors import ApplicationError, Conflict, NotFound

from .conftest import response_ids

pytestmark = [pytest.mark.sqlite, pytest.mark.django_db]


def submit(lease, user, groups=None, **kw):
    groups = groups if groups is not None else [[r] for r in lease.shown_order]
    return ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=user, groups=groups, **kw)


# --- pairs ---------------------------------------------------------------------------------------

def test_pairs_from_a_full_order():
    assert pairs_from_groups([[1], [2], [3]]) == [(1, 2, 1), (1, 3, 2), (2, 3, 1)]


def test_pairs_with_ties_give_no_pair_inside_a_group():
    assert sorted(pairs_from_groups([[1, 2], [3], [4, 5]])) == sorted([
        (1, 3, 1), (2, 3, 1), (1, 4, 2), (1, 5, 2), (2, 4, 2), (2, 5, 2), (3, 4, 1), (3, 5, 1)])
    assert pairs_from_groups([[1, 2]]) == []


def test_pairwise_is_the_same_with_two_responses():
    assert pairs_from_groups([[9], [4]]) == [(9, 4, 1)]


@pytest.mark.parametrize("groups, needle", [
    ([[1], [2], [99]], "unknown response ids [99]"),
    ([[1], [2]], "missing response ids [3]"),
    ([[1], [2, 1], [3]], "more than once: [1]"),
    ([[1], [], [2, 3]], "group 1 of the ranking is empty"),
    ([1, 2, 3], "list of groups"),
    ([], "list of groups"),
    ([[1], ["2"], [3]], "not a response id"),
])
def test_ranking_validate_names_the_problem(groups, needle):
    with pytest.raises(ApplicationError) as exc:
        ranking_validate(groups, response_ids=[1, 2, 3], allow_ties=True)
    assert needle in exc.value.message and exc.value.code == "invalid_ranking"


def test_ties_rejected_where_not_allowed():
    assert ranking_validate([[1, 2], [3]], response_ids=[1, 2, 3], allow_ties=True) == [[1, 2], [3]]
    with pytest.raises(ApplicationError, match="does not allow ties"):
        ranking_validate([[1, 2], [3]], response_ids=[1, 2, 3], allow_ties=False)


# --- leases --------------------------------------------------------------------------------------

def test_next_gives_a_lease_with_a_shuffled_recorded_order(make_project, make_tasks, annotators):
    project = make_project(responses_per_task=4)
    [task] = make_tasks(project, 1, responses=4)
    lease = task_lease_next(project=project, annotator=annotators[0])
    assert lease.task_id == task.pk and lease.status == "active"
    assert sorted(lease.shown_order) == sorted(response_ids(task))
    assert lease.expires_at > timezone.now() + timedelta(seconds=500)
    task.refresh_from_db()
    assert task.claimed == 1 and task.rankings_done == 0


def test_shown_order_varies_between_annotators(make_project, make_tasks, make_user):
    project = make_project(responses_per_task=8, rankings_per_task=10)
    make_tasks(project, 1, responses=8)
    orders = {tuple(task_lease_next(project=project, annotator=make_user(f"u{i}")).shown_order) for i in range(6)}
    assert len(orders) > 1  # 8! orders: six identical shuffles would be a bug, not chance


def test_asking_again_with_a_live_lease_gives_the_same_task(make_project, make_tasks, annotators):
    project = make_project()
    make_tasks(project, 3)
    first = task_lease_next(project=project, annotator=annotators[0])
    again = task_lease_next(project=project, annotator=annotators[0])
    assert again.pk == first.pk and again.task_id == first.task_id
    assert RankingTask.objects.get(pk=first.task_id).claimed == 1


def test_k_counts_live_leases_and_nobody_ranks_twice(make_project, make_tasks, annotators):
    project = make_project(rankings_per_task=2)
    [task] = make_tasks(project, 1)
    a, b, c = annotators[:3]
    la = task_lease_next(project=project, annotator=a)
    lb = task_lease_next(project=project, annotator=b)
    assert la.task_id == lb.task_id == task.pk
    assert task_lease_next(project=project, annotator=c) is None  # two live leases fill k=2
    submit(la, a)
    assert task_lease_next(project=project, annotator=a) is None  # a ranked it already
    submit(lb, b)
    task.refresh_from_db()
    assert task.rankings_done == 2 and task.completed_at is not None
    assert task_lease_next(project=project, annotator=c) is None
    assert sorted(Ranking.objects.filter(task=task).values_list("slot", flat=True)) == [0, 1]


def test_expired_lease_returns_task_to_the_pool(make_project, make_tasks, annotators):
    project = make_project()
    [task] = make_tasks(project, 1)
    a, b = annotators[:2]
    lease = task_lease_next(project=project, annotator=a)
    assert task_lease_next(project=project, annotator=b) is None
    later = timezone.now() + timedelta(seconds=601)
    lb = task_lease_next(project=project, annotator=b, now=later)
    assert lb.task_id == task.pk
    lease.refresh_from_db()
    assert lease.status == "expired"
    with pytest.raises(Conflict) as exc:
        submit(lease, a, now=later)
    assert exc.value.code == "lease_expired" and exc.value.status == 409
    submit(lb, b, now=later)
    task.refresh_from_db()
    assert (task.claimed, task.rankings_done) == (1, 1)


def test_an_annotator_may_get_back_a_task_whose_lease_expired(make_project, make_tasks, annotators):
    project = make_project()
    [task] = make_tasks(project, 1)
    a = annotators[0]
    first = task_lease_next(project=project, annotator=a)
    later = timezone.now() + timedelta(seconds=700)
    again = task_lease_next(project=project, annotator=a, now=later)
    assert again.pk == first.pk and again.status == "active" and again.expires_at > later
    submit(again, a, now=later)
    assert RankingTask.objects.get(pk=task.pk).rankings_done == 1


def test_heartbeat_extends_and_refuses_expired_or_foreign(make_project, make_tasks, annotators):
    project = make_project()
    make_tasks(project, 1)
    a, b = annotators[:2]
    lease = task_lease_next(project=project, annotator=a)
    soon = timezone.now() + timedelta(seconds=500)
    renewed = lease_heartbeat(lease_id=lease.pk, annotator=a, now=soon)
    assert renewed.expires_at > lease.expires_at
    with pytest.raises(Conflict) as exc:
        lease_heartbeat(lease_id=lease.pk, annotator=b)
    assert exc.value.code == "lease_not_yours"
    with pytest.raises(Conflict) as exc:
        lease_heartbeat(lease_id=lease.pk, annotator=a, now=soon + timedelta(seconds=601))
    assert exc.value.code == "lease_expired"
    with pytest.raises(NotFound):
        lease_heartbeat(lease_id=999999, annotator=a)


def test_skip_frees_the_slot_and_the_task_never_comes_back(make_project, make_tasks, annotators):
    project = make_project()
    [task] = make_tasks(project, 1)
    a, b = annotators[:2]
    lease = task_lease_next(project=project, annotator=a)
    with pytest.raises(ApplicationError, match="needs a reason"):
        task_skip(task_id=task.pk, lease_id=lease.pk, annotator=a, reason=" ")
    task_skip(task_id=task.pk, lease_id=lease.pk, annotator=a, reason="not my language")
    task_skip(task_id=task.pk, lease_id=lease.pk, annotator=a, reason="again")  # no-op
    task.refresh_from_db()
    assert task.claimed == 0
    assert task_lease_next(project=project, annotator=a) is None
    assert task_lease_next(project=project, annotator=b).task_id == task.pk
    assert Lease.objects.get(pk=lease.pk).skip_reason == "not my language"


# --- submit --------------------------------------------------------------------------------------

def test_submit_stores_ranking_and_pairs(make_project, make_tasks, annotators):
    project = make_project(responses_per_task=3)
    [task] = make_tasks(project, 1, responses=3)
    a = annotators[0]
    lease = task_lease_next(project=project, annotator=a)
    r1, r2, r3 = response_ids(task)
    ranking, created = submit(lease, a, [[r2], [r1, r3]], flags=["unsafe"], rationale="r2 is right",
                              time_spent_ms=4200)
    assert created and ranking.groups == [[r2], [r1, r3]] and ranking.shown_order == lease.shown_order
    assert ranking.flags == ["unsafe"] and ranking.time_spent_ms == 4200
    pairs = sorted(Pair.objects.filter(ranking=ranking).values_list("winner", "loser", "margin"))
    assert pairs == sorted([(r2, r1, 1), (r2, r3, 1)])
    assert Lease.objects.get(pk=lease.pk).status == "submitted"


def test_same_submission_twice_returns_the_first(make_project, make_tasks, annotators):
    project = make_project()
    make_tasks(project, 1)
    a = annotators[0]
    lease = task_lease_next(project=project, annotator=a)
    first, created = submit(lease, a)
    again, created_again = submit(lease, a)
    assert created and not created_again and again.pk == first.pk
    assert Ranking.objects.count() == 1 and Pair.objects.count() == 1
    with pytest.raises(ApplicationError) as exc:
        submit(lease, a, [[r] for r in reversed(lease.shown_order)])
    assert exc.value.status == 409 and exc.value.code == "already_submitted"


def test_submit_with_someone_elses_lease_or_wrong_task(make_project, make_tasks, annotators):
    project = make_project()
    t1, t2 = make_tasks(project, 2)
    a, b = annotators[:2]
    lease = task_lease_next(project=project, annotator=a)
    with pytest.raises(Conflict) as exc:
        submit(lease, b)
    assert exc.value.code == "lease_not_yours"
    other = t2 if lease.task_id == t1.pk else t1
    with pytest.raises(ApplicationError) as exc:
        ranking_submit(task_id=other.pk, lease_id=lease.pk, annotator=a, groups=[[1], [2]])
    assert exc.value.code == "lease_task_mismatch"


def test_unknown_flag_rejected(make_project, make_tasks, annotators):
    project = make_project()
    make_tasks(project, 1)
    lease = task_lease_next(project=project, annotator=annotators[0])
    with pytest.raises(ApplicationError, match="unknown flags"):
        submit(lease, annotators[0], flags=["boring"])


def test_both_bad_is_a_tie_with_its_flag_and_no_pairs(make_project, make_tasks, annotators):
    project = make_project()
    [task] = make_tasks(project, 1)
    lease = task_lease_next(project=project, annotator=annotators[0])
    ranking, _ = submit(lease, annotators[0], [response_ids(task)], flags=["both_bad", "unsafe"])
    assert ranking.flags == ["unsafe", "both_bad"] and ranking.pairs.count() == 0


def test_gold_accuracy_is_recorded(make_project, make_tasks, annotators):
    project = make_project(rankings_per_task=2)
    [task] = make_tasks(project, 1, gold_index=0)
    best, worst = response_ids(task)
    a, b = annotators[:2]
    ra, _ = submit(task_lease_next(project=project, annotator=a), a, [[best], [worst]])
    rb, _ = submit(task_lease_next(project=project, annotator=b), b, [[worst], [best]])
    assert (ra.gold_correct, rb.gold_correct) == (True, False)
    task_gold_set(task=task, response_id=None)
    with pytest.raises(NotFound):
        task_gold_set(task=task, response_id=123456)


# --- constraints ---------------------------------------------------------------------------------

def test_database_refuses_more_than_k_and_a_second_ranking(make_project, make_tasks, annotators):
    project = make_project(rankings_per_task=1)
    [task] = make_tasks(project, 1)
    a, b = annotators[:2]
    lease = task_lease_next(project=project, annotator=a)
    ranking, _ = submit(lease, a)
    with pytest.raises(IntegrityError), transaction.atomic():
        RankingTask.objects.filter(pk=task.pk).update(rankings_done=2, claimed=2)
    lb = Lease.objects.create(project=project, task=task, annotator=b, expires_at=timezone.now(), status="expired")
    with pytest.raises(IntegrityError), transaction.atomic():  # slot 0 is taken
        Ranking.objects.create(project=project, task=task, lease=lb, annotator=b, slot=0, groups=ranking.groups)
    with pytest.raises(IntegrityError), transaction.atomic():  # same annotator twice
        Lease.objects.create(project=project, task=task, annotator=a, expires_at=timezone.now())


# --- tasks, rounds, demonstrations ----------------------------------------------------------------

def test_tasks_create_validates_and_keeps_lineage(make_project, annotators):
    from annotate.models import Prompt

    project = make_project()
    prompt = Prompt.objects.create(project=project, text="hi")
    with pytest.raises(ApplicationError, match="2 to 8 responses"):
        tasks_create(project=project, prompt=prompt, responses=[{"text": "x"}])
    with pytest.raises(ApplicationError, match="unknown sampling"):
        tasks_create(project=project, prompt=prompt, responses=[{"text": "x", "sampling": {"beam": 2}}, {"text": "y"}])
    rnd = round_create(project=project, generate_job_id=5)
    task = tasks_create(project=project, prompt=prompt, round=rnd, responses=[
        {"text": "a", "source": "model", "model_version_id": 3, "model_name": "p3",
         "sampling": {"strategy": "top_k", "top_k": 40}},
        {"text": "b", "source": "imported"}])
    first = Response.objects.get(pk=response_ids(task)[0])
    assert first.model_version_id == 3 and first.sampling["top_k"] == 40 and first.sampling["top_p"] is None
    assert task.rankings_needed == 1 and task.round == rnd


def test_round_numbers_and_completion(make_project, make_tasks, annotators):
    project = make_project()
    r1, r2 = round_create(project=project), round_create(project=project)
    assert (r1.number, r2.number) == (1, 2)
    assert not round_is_complete(r1)  # no tasks yet
    make_tasks(project, 2, round=r1)
    a = annotators[0]
    submit(task_lease_next(project=project, annotator=a), a)
    assert not round_is_complete(r1)
    submit(task_lease_next(project=project, annotator=a), a)
    assert round_is_complete(r1)


def test_project_create_rules():
    with pytest.raises(ApplicationError, match="responses_per_task"):
        project_create(name="x", responses_per_task=9)
    with pytest.raises(ApplicationError, match="rankings_per_task"):
        project_create(name="x", rankings_per_task=0)
    project_create(name="Same Name")
    with pytest.raises(Conflict):
        project_create(name="Same Name")


def test_demonstration_written_or_edited(make_project, make_tasks, annotators):
    project = make_project()
    [task] = make_tasks(project, 1)
    a = annotators[0]
    task_lease_next(project=project, annotator=a)  # shown the prompt, so may write for it
    demo = demonstration_create(prompt=task.prompt, annotator=a, text="The ideal answer.")
    assert demo.response.source == "human" and demo.response.author == a
    base = response_ids(task)[0]
    edit = demonstration_create(prompt=task.prompt, annotator=a, text="Better.", based_on_response_id=base)
    assert edit.response.parent_response_id == base
    other = make_tasks(project, 1)[0]
    with pytest.raises(ApplicationError, match="not a response to prompt"):
        demonstration_create(prompt=other.prompt, annotator=a, text="x", based_on_response_id=base,
                             offer=prompt_offer_make(prompt=other.prompt, annotator=a))
    with pytest.raises(ApplicationError, match="non-empty"):
        demonstration_create(prompt=task.prompt, annotator=a, text="  ")


def test_a_backlog_of_stale_leases_is_reaped_and_does_not_hide_the_live_one(make_project, make_tasks, make_user):
    project = make_project()
    make_tasks(project, 60)
    users = [make_user(f"gone{i}") for i in range(55)]
    for user in users:
        task_lease_next(project=project, annotator=user)
    Lease.objects.filter(annotator__in=users).update(expires_at=timezone.now() - timedelta(seconds=1))
    me = make_user("me")
    mine = task_lease_next(project=project, annotator=me)
    assert task_lease_next(project=project, annotator=me).pk == mine.pk
    for _ in range(3):
        task_lease_next(project=project, annotator=make_user(f"late{_}"))
    assert not Lease.objects.filter(status="active", expires_at__lte=timezone.now()).exists()
    assert RankingTask.objects.filter(claimed=1).count() == 4
