"""Exactly-k and once-per-annotator under real concurrency: many threads, each with its own
database connection, calling next and submit at once (PostgreSQL, and SQLite in the second pass)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections
from django.db.models import Count, F

from annotate.models import Lease, Pair, Ranking, RankingTask
from annotate.services.leases import task_lease_next, task_skip
from annotate.services.rankings import ranking_submit
from config.errors import ApplicationError

pytestmark = [pytest.mark.sqlite, pytest.mark.django_db(transaction=True)]


def run_threads(target, n: int) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


@pytest.fixture(autouse=True)
def _file_database():
    if connection.vendor == "sqlite":
        assert not connection.is_in_memory_db(), "threads need a file SQLite database (see conftest)"


def test_many_annotators_exactly_k_no_duplicates(make_project, make_tasks, make_user, settings):
    settings.RLHF_LEASE_SECONDS = 5
    k, n_tasks, n_threads = 3, 30, 8
    project = make_project(responses_per_task=3, rankings_per_task=k)
    make_tasks(project, n_tasks, responses=3)
    users = [make_user(f"t{i}") for i in range(n_threads)]
    outcome = Counter()
    lock = threading.Lock()

    def annotate(i):
        user, rng = users[i], random.Random(i)
        while True:
            lease = task_lease_next(project=project, annotator=user)
            if lease is None:
                # Nothing for now; a slot another annotator holds may still come back (a skip), as
                # a page that polls would see. Done once nobody holds a lease.
                if not Lease.objects.filter(task__project=project, status="active").exists():
                    break
                time.sleep(0.05)
                continue
            if rng.random() < 0.1:
                task_skip(task_id=lease.task_id, lease_id=lease.pk, annotator=user, reason="busy")
                result = "skip"
            else:
                groups = [[r] for r in lease.shown_order]
                ranking, created = ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=user,
                                                  groups=groups)
                again, created_again = ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=user,
                                                      groups=groups)  # a retried request
                assert created and not created_again and again.pk == ranking.pk
                result = "ranked"
            with lock:
                outcome[result] += 1

    errors = run_threads(annotate, n_threads)
    assert not errors, [repr(e) for e in errors[:3]]
    per_task = dict(Ranking.objects.values("task").annotate(n=Count("id")).values_list("task", "n"))
    assert max(per_task.values()) <= k
    assert not Ranking.objects.values("task", "annotator").annotate(n=Count("id")).filter(n__gt=1).exists()
    # Eight annotators, ten percent skips: every task still reaches k.
    assert sum(per_task.values()) == n_tasks * k == outcome["ranked"]
    assert not RankingTask.objects.exclude(rankings_done=F("claimed")).exists()
    assert not RankingTask.objects.exclude(rankings_done=k).exists()
    assert Pair.objects.count() == n_tasks * k * 3
    assert not Lease.objects.filter(status="active").exists()


def test_expiring_leases_under_load_never_over_collect(make_project, make_tasks, make_user, settings):
    settings.RLHF_LEASE_SECONDS = 1
    k, n_threads = 2, 6
    project = make_project(rankings_per_task=k)
    make_tasks(project, 12)
    users = [make_user(f"e{i}") for i in range(n_threads)]
    late = Counter()
    # The slow annotators hold a lease each before the others start, so their first submit is
    # surely late, whatever order the threads get the database in.
    held = {i: task_lease_next(project=project, annotator=users[i]) for i in (0, 3)}

    def annotate(i):
        user = users[i]
        lease = held.get(i) or task_lease_next(project=project, annotator=user)
        dawdled: set[int] = set()
        while lease is not None:
            if i in held and len(dawdled) < 2 and lease.task_id not in dawdled:
                dawdled.add(lease.task_id)  # let the lease run out, on two tasks at most
                time.sleep(1.1)
            try:
                ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=user,
                               groups=[[r] for r in lease.shown_order])
            except ApplicationError as exc:
                assert exc.code == "lease_expired", exc.message
                late[i] += 1
            lease = task_lease_next(project=project, annotator=user)

    errors = run_threads(annotate, n_threads)
    assert not errors, [repr(e) for e in errors[:3]]
    assert sum(late.values()) > 0  # the scenario did exercise expiry
    per_task = Counter(Ranking.objects.values_list("task_id", flat=True))
    assert max(per_task.values()) <= k and sum(per_task.values()) == 12 * k
    assert not Ranking.objects.values("task", "annotator").annotate(n=Count("id")).filter(n__gt=1).exists()


def test_one_annotator_double_clicking_gets_one_lease(make_project, make_tasks, make_user):
    project = make_project()
    make_tasks(project, 10)
    user = make_user("clicky")
    seen: list[int] = []

    def click(_):
        seen.append(task_lease_next(project=project, annotator=user).pk)

    errors = run_threads(click, 6)
    assert not errors, [repr(e) for e in errors[:3]]
    assert len(set(seen)) == 1
    assert Lease.objects.filter(annotator=user, status="active").count() == 1
    assert RankingTask.objects.filter(claimed__gt=0).count() == 1


def test_concurrent_duplicate_submissions_store_one_ranking(make_project, make_tasks, make_user):
    project = make_project()
    make_tasks(project, 1)
    user = make_user("twice")
    lease = task_lease_next(project=project, annotator=user)
    results: list[tuple[int, bool]] = []

    def send(_):
        ranking, created = ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=user,
                                          groups=[[r] for r in lease.shown_order])
        results.append((ranking.pk, created))

    errors = run_threads(send, 6)
    assert not errors, [repr(e) for e in errors[:3]]
    assert len({pk for pk, _ in results}) == 1 and sum(created for _, created in results) == 1
    assert Ranking.objects.count() == 1 and Pair.objects.count() == 1


def test_next_looks_again_when_the_task_it_waited_for_filled_up(make_project, make_tasks, make_user):
    """Both open tasks are row-locked by another transaction, which fills the first and leaves
    the second open. The next-task request finds nothing unlocked, waits, finds the first full
    once the lock is released, and must take the second instead of answering "nothing left"."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are a PostgreSQL matter; SQLite serialises whole transactions")
    project = make_project(rankings_per_task=1)
    first, second = make_tasks(project, 2)
    user = make_user("waiter")
    locked, release = threading.Event(), threading.Event()

    def holder(_):
        from django.db import transaction

        with transaction.atomic():
            RankingTask.objects.filter(pk=first.pk).update(claimed=F("claimed") + 1)  # now full
            list(RankingTask.objects.select_for_update().filter(pk=second.pk))  # locked, still open
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=lambda: (holder(0), connections.close_all()))
    thread.start()
    assert locked.wait(10)
    threading.Timer(0.3, release.set).start()
    lease = task_lease_next(project=project, annotator=user)
    thread.join(10)
    assert lease is not None and lease.task_id == second.pk
