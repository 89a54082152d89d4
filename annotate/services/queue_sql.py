"""The statements behind the two requests every annotator click makes: next task and submit.

They are written as SQL because the ORM spent more time composing these queries than the
database spent running them (bench/annotation_load.py; the profile is described in the README).
Each function here is one statement; the callers in leases.py and rankings.py own the
transactions and the rules. The statements run on PostgreSQL and on SQLite (3.35 or newer, for
RETURNING); the one difference is row locking: PostgreSQL locks rows with FOR UPDATE (SKIP
LOCKED to let concurrent requests take different tasks), SQLite has no row locks and serialises
writers instead (every transaction is IMMEDIATE, see config/settings.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache

from django.db import connection
from django.db.models import Model
from django.utils.dateparse import parse_datetime

from ..models import Lease, Project, RankingTask, TaskResponse

TASK = RankingTask._meta.db_table
LEASE = Lease._meta.db_table
PROJECT = Project._meta.db_table
TASK_RESPONSE = TaskResponse._meta.db_table


def _row_locks() -> bool:
    return connection.features.has_select_for_update


def _datetime_in(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def datetime_out(value) -> datetime:
    """A timestamp as the driver returns it (aware on PostgreSQL, naive UTC or text on SQLite)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def json_out(value):
    """A JSON column as the driver returns it: Django reads jsonb as text on PostgreSQL too."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


@cache
def _insert_sql(table: str, columns: tuple[str, ...], rows: int, returning: bool) -> str:
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)}"
            + (" RETURNING id" if returning else ""))


def rows_insert(model: type[Model], rows: list[dict], *, returning: bool = False) -> list[int]:
    """INSERT rows (field name -> value, the same names in every row) in one statement. Values go
    through each field's own conversion for this database, as Model.save() would do."""
    if not rows:
        return []
    fields = [(name, model._meta.get_field(name)) for name in rows[0]]
    params = [field.get_db_prep_save(row[name], connection) for row in rows for name, field in fields]
    sql = _insert_sql(model._meta.db_table, tuple(field.column for _, field in fields), len(rows), returning)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()] if returning else []


def as_saved(instance: Model) -> Model:
    """A model instance built from values just written by rows_insert, marked as stored."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def leases_live_or_stale(project_id: int, annotator_id: int, now: datetime, limit: int) -> list[tuple]:
    """(id, task_id, annotator_id, expires_at) of the annotator's active lease in the project,
    first, then the project's active leases past their expiry (both from the partial index of
    active leases)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, task_id, annotator_id, expires_at FROM {LEASE} "
            "WHERE project_id = %s AND status = 'active' AND (annotator_id = %s OR expires_at <= %s) "
            "ORDER BY CASE WHEN annotator_id = %s THEN 0 ELSE 1 END, expires_at LIMIT %s",
            [project_id, annotator_id, _datetime_in(now), annotator_id, limit])
        return [(i, t, a, datetime_out(e)) for i, t, a, e in cursor.fetchall()]


# The open tasks this annotator has not ranked, skipped or leased (an expired lease of theirs
# does not count: the task may come back to them). Read from the partial index task_open_queue
# (claimed < rankings_needed), so no statement below scans or sorts the task table.
# "LIMIT 1 OFFSET 0" keeps PostgreSQL from turning NOT EXISTS into an anti-join, which reads
# every lease the annotator ever had (a cost that grows with their history); as a subplan it is
# one probe of the (task, annotator) unique index per candidate task, in id order.
OPEN_FOR_ANNOTATOR = (
    f"SELECT t.id FROM {TASK} t WHERE t.project_id = %s AND t.claimed < t.rankings_needed"
    f" AND NOT EXISTS (SELECT 1 FROM {LEASE} l WHERE l.task_id = t.id AND l.annotator_id = %s"
    " AND l.status <> 'expired' LIMIT 1 OFFSET 0) ORDER BY t.id LIMIT 1"
)


def task_claim(project_id: int, annotator_id: int, *, wait: bool) -> tuple[int, bool] | None:
    """Take one slot of the oldest open task for the annotator: (task id, whether they hold an
    expired lease on it) or None. On PostgreSQL tasks row-locked by other requests are skipped,
    or, with `wait`, waited for; a row that is no longer open once its lock is released is
    passed over for the next (PostgreSQL re-checks locked rows under the LIMIT)."""
    lock = ""
    if _row_locks():
        lock = " FOR UPDATE" if wait else " FOR UPDATE SKIP LOCKED"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TASK} SET claimed = claimed + 1 WHERE id = ({OPEN_FOR_ANNOTATOR}{lock}) "
            # Only an expired lease of theirs can exist on the task the subquery picked.
            f"RETURNING id, EXISTS (SELECT 1 FROM {LEASE} l WHERE l.task_id = {TASK}.id AND l.annotator_id = %s)",
            [project_id, annotator_id, annotator_id])
        row = cursor.fetchone()
    return None if row is None else (row[0], bool(row[1]))


def task_response_ids(task_id: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT response_id FROM {TASK_RESPONSE} WHERE task_id = %s ORDER BY position", [task_id])
        return [row[0] for row in cursor.fetchall()]


def lease_reactivate(task_id: int, annotator_id: int, order: list[int], expires: datetime, now: datetime) -> None:
    """Hand an expired lease out again: it starts afresh (created_at is when it was last handed
    out, which the lease's lifetime cap counts from)."""
    shown_order = Lease._meta.get_field("shown_order").get_db_prep_save(order, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {LEASE} SET status = 'active', shown_order = %s, expires_at = %s, created_at = %s, "
            "ended_at = NULL WHERE task_id = %s AND annotator_id = %s",
            [shown_order, _datetime_in(expires), _datetime_in(now), task_id, annotator_id])


def lease_lock(lease_id: int) -> Lease | None:
    """The lease, row-locked on PostgreSQL, with its project's allow_ties as `allow_ties`."""
    lock = f"FOR UPDATE OF {LEASE}" if _row_locks() else ""
    return next(iter(Lease.objects.raw(
        f"SELECT {LEASE}.*, p.allow_ties AS allow_ties FROM {LEASE} "
        f"JOIN {PROJECT} p ON p.id = {LEASE}.project_id WHERE {LEASE}.id = %s {lock}", [lease_id])), None)


def task_count_ranking(task_id: int, now: datetime) -> tuple[int, int | None, int]:
    """Count one more ranking on the task (its row lock is held until commit) and return
    (the slot it fills, the gold response, the project)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TASK} SET rankings_done = rankings_done + 1, "
            "completed_at = CASE WHEN rankings_done + 1 >= rankings_needed THEN %s ELSE NULL END "
            "WHERE id = %s RETURNING rankings_done, gold_response_id, project_id",
            [_datetime_in(now), task_id])
        done, gold, project_id = cursor.fetchone()
    return done - 1, gold, project_id


def lease_close(lease_id: int, status: str, now: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {LEASE} SET status = %s, ended_at = %s WHERE id = %s",
                       [status, _datetime_in(now), lease_id])
