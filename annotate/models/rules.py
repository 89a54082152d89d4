"""The annotation queue's rules, each named once, for the ORM (Q objects) and for the raw statements
of services/queue_sql.py (SQL over a table alias) alike: when a task has a free slot or is complete,
when a lease is stale, which statuses a lease has. The models' partial indexes use the same Q."""

from __future__ import annotations

from datetime import datetime

from django.db.models import F, Q

# Lease statuses. A lease is the one row per (task, annotator); an expired one may become active again.
ACTIVE, SUBMITTED, SKIPPED, EXPIRED = "active", "submitted", "skipped", "expired"
LEASE_STATUSES = (ACTIVE, SUBMITTED, SKIPPED, EXPIRED)


def task_open() -> Q:
    """A task with a free slot: `claimed` counts its rankings plus its live leases."""
    return Q(claimed__lt=F("rankings_needed"))


def task_open_sql(alias: str) -> str:
    return f"{alias}.claimed < {alias}.rankings_needed"


def task_complete() -> Q:
    """A task that has its k rankings."""
    return Q(rankings_done__gte=F("rankings_needed"))


def lease_active() -> Q:
    return Q(status=ACTIVE)


def lease_active_sql(alias: str = "") -> str:
    return f"{alias + '.' if alias else ''}status = '{ACTIVE}'"


def lease_stale(now: datetime) -> Q:
    """An active lease past its expiry: its slot goes back to the pool when next seen."""
    return Q(status=ACTIVE, expires_at__lte=now)


def lease_stale_sql(alias: str = "") -> str:
    """SQL of lease_stale, with one parameter: now."""
    prefix = alias + "." if alias else ""
    return f"({prefix}status = '{ACTIVE}' AND {prefix}expires_at <= %s)"


def lease_seen_sql(alias: str) -> str:
    """The annotator has (or had) this task: any lease but an expired one (that task may come back)."""
    return f"{alias}.status <> '{EXPIRED}'"
