"""Handing tasks to annotators: next task under a lease, heartbeats, skips, expiry.

Concurrency: on PostgreSQL the open task is taken with SELECT … FOR UPDATE SKIP LOCKED, so
concurrent requests take different rows instead of queueing on one; on SQLite every write
transaction is IMMEDIATE (see config/settings.py), so they run one after another. Either way
the counters are only changed under the task's row lock and the check and unique constraints
(see models) refuse anything that would break exactly-k or once-per-annotator.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from config.errors import ApplicationError, Conflict, NotFound

from ..models import Lease, Project, RankingTask
from . import queue_sql as sql

REAP_BATCH = 50
_RETRIES = 4


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.RLHF_LEASE_SECONDS)


def _release_slots(task_ids: list[int]) -> None:
    """Give back one claimed slot per listed task id. Tasks are updated in id order so two
    transactions releasing overlapping sets never wait on each other crosswise."""
    for task_id, n in sorted(Counter(task_ids).items()):
        RankingTask.objects.filter(pk=task_id).update(claimed=F("claimed") - n)


def _expire(leases: list[tuple[int, int]], now: datetime) -> None:
    if not leases:
        return
    Lease.objects.filter(pk__in=[lease_id for lease_id, _ in leases], status=Lease.Status.ACTIVE).update(
        status=Lease.Status.EXPIRED, ended_at=now)
    _release_slots([task_id for _, task_id in leases])


def leases_expire(*, project: Project, now: datetime | None = None, limit: int = REAP_BATCH) -> int:
    """Return the slots of leases past their expiry to the pool (a bounded batch; the index on
    active leases by expiry makes this a range read of the expired ones only)."""
    now = now or timezone.now()
    with transaction.atomic():
        stale = list(
            Lease.objects.select_for_update(skip_locked=True)
            .filter(project=project, status=Lease.Status.ACTIVE, expires_at__lte=now)
            .order_by("expires_at").values_list("id", "task_id")[:limit]
        )
        _expire(stale, now)
    return len(stale)


def _claim(project_id: int, annotator_id: int) -> tuple[int, bool] | None:
    # Skipping locked rows lets concurrent requests take different tasks instead of queueing on
    # one. When that finds nothing, the only open tasks may be locked for a moment by a submit
    # or an expiry: asking again and waiting tells "nothing left" apart from "busy right now"
    # (a waited-for row that is full once released is passed over for the next one).
    return (sql.task_claim(project_id, annotator_id, wait=False)
            or sql.task_claim(project_id, annotator_id, wait=True))


def _lease_next_once(project_id: int, annotator, now: datetime) -> Lease | None:
    # One read, outside any transaction: this annotator's active lease and the project's stale
    # ones (both come from small partial indexes). Most calls find nothing to expire and go
    # straight to the claim.
    active = sql.leases_live_or_stale(project_id, annotator.pk, now, REAP_BATCH)
    mine = [row for row in active if row[2] == annotator.pk]
    if mine and mine[0][3] > now:
        return Lease.objects.get(pk=mine[0][0])  # asking again with a live lease: the same task
    if active:
        # Expiry in its own transaction, committed before a task is claimed, so the claim below
        # holds no other row locks while it may wait. Other annotators' leases are locked with
        # SKIP LOCKED and re-checked: another request may be expiring or submitting them. The
        # annotator's own stale lease is waited for instead, before any other lock is held:
        # their task may be the one they get back, and the claim must see that lease expired.
        stale_rows = Lease.objects.filter(status=Lease.Status.ACTIVE, expires_at__lte=now)
        with transaction.atomic():
            stale = []
            if mine:
                stale += stale_rows.select_for_update().filter(pk=mine[0][0]).values_list("id", "task_id")
            stale += (stale_rows.select_for_update(skip_locked=True)
                      .filter(pk__in=[row[0] for row in active if row[2] != annotator.pk])
                      .values_list("id", "task_id"))
            _expire(stale, now)

    with transaction.atomic():
        claimed = _claim(project_id, annotator.pk)
        if claimed is None:
            return None
        task_id, reactivate = claimed
        order = sql.task_response_ids(task_id)
        random.SystemRandom().shuffle(order)  # shown order, per annotator, against position bias
        expires = now + min(lease_duration(), timedelta(seconds=settings.RLHF_LEASE_MAX_SECONDS))
        if reactivate:
            sql.lease_reactivate(task_id, annotator.pk, order, expires, now)
            return Lease.objects.get(task_id=task_id, annotator=annotator)
        fields = {"project_id": project_id, "task_id": task_id, "annotator_id": annotator.pk,
                  "status": Lease.Status.ACTIVE, "shown_order": order, "expires_at": expires,
                  "skip_reason": "", "created_at": now, "ended_at": None}
        [lease_id] = sql.rows_insert(Lease, [fields], returning=True)
        return sql.as_saved(Lease(id=lease_id, **fields))


def task_lease_next(*, project: Project | int, annotator, now: datetime | None = None) -> Lease | None:
    """The annotator's live lease in this project, or a new lease on the oldest open task they
    have not ranked or skipped; None when nothing is left for them. `project` may be given as
    its id (the API does, so that a next-task request reads no project row); a project that
    does not exist is reported when nothing is found for it."""
    project_id = project if isinstance(project, int) else project.pk
    for attempt in range(_RETRIES):
        try:
            lease = _lease_next_once(project_id, annotator, now or timezone.now())
            if lease is None and not Project.objects.filter(pk=project_id).exists():
                raise NotFound(f"project {project_id} does not exist")
            return lease
        except (IntegrityError, OperationalError):
            # IntegrityError: the same annotator's concurrent request took a lease first (the
            # one-active-lease constraint); the retry returns that lease. OperationalError: a
            # deadlock or lock timeout the database resolved by aborting us.
            if attempt == _RETRIES - 1:
                raise
    return None  # pragma: no cover


def _own_lease(lease_id: int, annotator) -> Lease:
    lease = sql.lease_lock(lease_id)
    if lease is None:
        raise NotFound(f"lease {lease_id} does not exist")
    if lease.annotator_id != annotator.pk:
        raise Conflict(f"lease {lease_id} belongs to another annotator", code="lease_not_yours")
    return lease


def lease_check_live(lease: Lease, now: datetime) -> None:
    if lease.status == Lease.Status.EXPIRED or (lease.status == Lease.Status.ACTIVE and lease.expires_at <= now):
        raise Conflict(f"lease {lease.pk} expired at {lease.expires_at.isoformat()}; ask for the next task again",
                       code="lease_expired")
    if lease.status != Lease.Status.ACTIVE:
        raise Conflict(f"lease {lease.pk} is already {lease.status}", code=f"lease_{lease.status}")


def lease_deadline(lease: Lease) -> datetime:
    """The latest a lease may live, heartbeats included (RLHF_LEASE_MAX_SECONDS from when it was
    handed out): one annotator cannot hold a task, and so keep a round from finishing, forever."""
    return lease.created_at + timedelta(seconds=settings.RLHF_LEASE_MAX_SECONDS)


@transaction.atomic
def lease_heartbeat(*, lease_id: int, annotator, now: datetime | None = None) -> Lease:
    """Push a live lease's expiry forward, never past its deadline; a lease that already expired
    cannot be revived."""
    now = now or timezone.now()
    lease = _own_lease(lease_id, annotator)
    lease_check_live(lease, now)
    deadline = lease_deadline(lease)
    if deadline <= now:
        raise Conflict(f"lease {lease.pk} reached its longest life ({settings.RLHF_LEASE_MAX_SECONDS} s) at "
                       f"{deadline.isoformat()}; ask for the next task again", code="lease_expired")
    lease.expires_at = min(now + lease_duration(), deadline)
    lease.save(update_fields=["expires_at"])
    return lease


@transaction.atomic
def task_skip(*, task_id: int, lease_id: int, annotator, reason: str, now: datetime | None = None) -> Lease:
    """The annotator passes on the task; it is never offered to them again. Skipping a lease that
    expired is allowed (the skip is still worth remembering); skipping twice is a no-op."""
    now = now or timezone.now()
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("a skip needs a reason", code="invalid_skip")
    lease = _own_lease(lease_id, annotator)
    if lease.task_id != task_id:
        raise ApplicationError(f"lease {lease_id} is for task {lease.task_id}, not task {task_id}",
                               code="lease_task_mismatch")
    if lease.status == Lease.Status.SKIPPED:
        return lease
    if lease.status == Lease.Status.SUBMITTED:
        raise Conflict(f"task {task_id} was already ranked with lease {lease_id}", code="lease_submitted")
    if lease.status == Lease.Status.ACTIVE:
        _release_slots([lease.task_id])
    lease.status = Lease.Status.SKIPPED
    lease.skip_reason = reason[:2000]
    lease.ended_at = now
    lease.save(update_fields=["status", "skip_reason", "ended_at"])
    return lease
