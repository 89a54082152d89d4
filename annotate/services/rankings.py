"""Submitting a ranking: validate it against the task and lease, store it raw, derive pairs; revising
the last one while its task is still open."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from config.errors import ApplicationError, Conflict, NotFound

from ..models import Lease, Pair, Ranking, RankingTask, Round
from . import queue_sql as sql
from .leases import _own_lease, lease_check_live
from .sql_rows import as_saved, rows_insert


def _invalid(message: str, **details) -> ApplicationError:
    return ApplicationError(message, code="invalid_ranking", details=details or None)


def ranking_validate(groups, *, response_ids: list[int], allow_ties: bool) -> list[list[int]]:
    """A ranking must place every response of the task exactly once, in groups best first.
    Returns the groups as lists of ints; raises naming what is wrong."""
    if not isinstance(groups, list) or not groups or not all(isinstance(g, list) for g in groups):
        raise _invalid("ranking must be a non-empty list of groups, each a list of response ids, best first")
    for i, group in enumerate(groups):
        if not group:
            raise _invalid(f"group {i} of the ranking is empty", group=i)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in group):
            raise _invalid(f"group {i} holds something that is not a response id", group=i)
    listed = [x for g in groups for x in g]
    known = set(response_ids)
    unknown = sorted(set(listed) - known)
    if unknown:
        raise _invalid(f"unknown response ids {unknown}; this task's responses are {sorted(known)}",
                       unknown=unknown)
    repeated = sorted(x for x, n in Counter(listed).items() if n > 1)
    if repeated:
        raise _invalid(f"response ids listed more than once: {repeated}", repeated=repeated)
    missing = sorted(known - set(listed))
    if missing:
        raise _invalid(f"missing response ids {missing}; a ranking places every response once", missing=missing)
    if not allow_ties:
        tied = [i for i, g in enumerate(groups) if len(g) > 1]
        if tied:
            raise _invalid(f"this project does not allow ties, but group {tied[0]} holds "
                           f"{len(groups[tied[0]])} responses", tied_groups=tied)
    return [list(g) for g in groups]


def pairs_from_groups(groups: list[list[int]]) -> list[tuple[int, int, int]]:
    """(winner, loser, margin): everything in a better group beats everything in each worse
    group, by the number of groups between them; ties give no pair."""
    return [(winner, loser, j - i)
            for i, better in enumerate(groups) for j in range(i + 1, len(groups))
            for winner in better for loser in groups[j]]


def _flags_validate(flags) -> list[str]:
    flags = list(flags or [])
    unknown = [f for f in flags if f not in Ranking.FLAGS]
    if unknown:
        raise ApplicationError(f"unknown flags {unknown}; allowed: {', '.join(Ranking.FLAGS)}",
                               code="invalid_flags", details={"allowed": list(Ranking.FLAGS)})
    return sorted(set(flags), key=Ranking.FLAGS.index)


@transaction.atomic
def ranking_submit(*, task_id: int, lease_id: int, annotator, groups, flags=(), rationale: str = "",
                   time_spent_ms: int | None = None, now: datetime | None = None) -> tuple[Ranking, bool]:
    """Store the ranking made under `lease_id` and its pairs. Returns (ranking, created): the
    same submission sent again with the same lease gives back the first ranking, not a second."""
    now = now or timezone.now()
    lease = _own_lease(lease_id, annotator)  # row lock: concurrent duplicates wait here
    if lease.task_id != task_id:
        raise ApplicationError(f"lease {lease_id} is for task {lease.task_id}, not task {task_id}",
                               code="lease_task_mismatch")
    groups = ranking_validate(groups, response_ids=list(lease.shown_order), allow_ties=lease.allow_ties)
    flags = _flags_validate(flags)
    if time_spent_ms is not None and (not isinstance(time_spent_ms, int) or time_spent_ms < 0):
        raise ApplicationError("time_spent_ms must be a non-negative integer", code="invalid_ranking")

    if lease.status == Lease.Status.SUBMITTED:
        first = lease.rankings.live().get()
        if first.groups == groups:
            return first, False
        raise ApplicationError(f"lease {lease_id} already submitted ranking {first.pk}; rankings are never "
                               "overwritten (revise it instead)", code="already_submitted", status=409)
    lease_check_live(lease, now)

    # The lease holds one of the task's claimed slots; turning it into a ranking keeps `claimed`
    # and fills the next ranking slot. The update takes the task's row lock (lease first, then
    # task: the order every service uses). The lease recorded the task's responses when it was
    # handed out, so they need no query here.
    slot, gold_response_id, project_id = sql.task_count_ranking(task_id, now)
    gold_correct = None if gold_response_id is None else groups[0] == [gold_response_id]
    fields = {"project_id": project_id, "task_id": task_id, "lease_id": lease.pk, "annotator_id": annotator.pk,
              "slot": slot, "groups": groups, "shown_order": lease.shown_order, "flags": flags,
              "rationale": (rationale or "")[:10000], "time_spent_ms": time_spent_ms,
              "gold_correct": gold_correct, "created_at": now}
    [ranking_id] = rows_insert(Ranking, [fields], returning=True)
    _pairs_insert(ranking_id, project_id=project_id, task_id=task_id, annotator_id=annotator.pk, groups=groups)
    sql.lease_close(lease.pk, Lease.Status.SUBMITTED, now)
    ranking = as_saved(Ranking(id=ranking_id, **fields))
    return ranking, True


# A task's rankings can still change while its round is collecting them; once the round has moved on
# to training, what was ranked is what the round's models learn from.
OPEN_ROUND_STAGES = (Round.Status.DRAFT, Round.Status.GENERATING, Round.Status.ANNOTATING)


def _pairs_insert(ranking_id: int, *, project_id: int, task_id: int, annotator_id: int, groups) -> None:
    rows_insert(Pair, [
        {"project_id": project_id, "ranking_id": ranking_id, "task_id": task_id, "annotator_id": annotator_id,
         "winner_id": w, "loser_id": lo, "margin": m}
        for w, lo, m in pairs_from_groups(groups)
    ])


@transaction.atomic
def ranking_revise(*, ranking_id: int, annotator, groups, flags=(), rationale: str = "",
                   time_spent_ms: int | None = None, now: datetime | None = None) -> tuple[Ranking, bool]:
    """Replace the annotator's last ranking with a new one while its task is still open (no round,
    or a round still collecting rankings). The old row keeps its content and gets `superseded_at`;
    the new one `revises` it, takes its slot and lease (so the task's counters and the at-most-k
    rule do not move) and carries its own pairs. Returns (ranking, created): the same revision sent
    twice gives back the first."""
    now = now or timezone.now()
    old = Ranking.objects.filter(pk=ranking_id).only("lease_id", "annotator_id").first()
    if old is None or old.annotator_id != annotator.pk:
        raise NotFound(f"ranking {ranking_id} does not exist or is not yours")
    lease = _own_lease(old.lease_id, annotator)  # lease first, then task: the order every service uses
    old = Ranking.objects.select_for_update().get(pk=ranking_id)
    groups = ranking_validate(groups, response_ids=list(old.shown_order), allow_ties=lease.allow_ties)
    flags = _flags_validate(flags)
    if time_spent_ms is not None and (not isinstance(time_spent_ms, int) or time_spent_ms < 0):
        raise ApplicationError("time_spent_ms must be a non-negative integer", code="invalid_ranking")
    if old.superseded_at is not None:
        live = Ranking.objects.live().get(task_id=old.task_id, annotator_id=annotator.pk)
        if live.revises_id == old.pk and live.groups == groups:
            return live, False
        raise Conflict(f"ranking {old.pk} was already revised (ranking {live.pk} replaced it)",
                       code="already_revised")
    last = Ranking.objects.live().filter(project_id=old.project_id, annotator_id=annotator.pk).order_by("-id").first()
    if last.pk != old.pk:
        raise Conflict(f"only your last ranking in this project can be revised (ranking {last.pk})",
                       code="not_last_ranking")
    task = RankingTask.objects.select_for_update(of=("self",)).select_related("round").get(pk=old.task_id)
    if task.round is not None and task.round.status not in OPEN_ROUND_STAGES:
        raise Conflict(f"task {task.pk} is closed: its round is at {task.round.status.replace('_', ' ')}, so its "
                       "rankings are final", code="task_closed")

    Ranking.objects.filter(pk=old.pk).update(superseded_at=now)
    fields = {"project_id": old.project_id, "task_id": old.task_id, "lease_id": old.lease_id,
              "annotator_id": annotator.pk, "slot": old.slot, "groups": groups, "shown_order": old.shown_order,
              "flags": flags, "rationale": (rationale or "")[:10000], "time_spent_ms": time_spent_ms,
              "gold_correct": None if task.gold_response_id is None else groups[0] == [task.gold_response_id],
              "revises_id": old.pk, "created_at": now}
    [new_id] = rows_insert(Ranking, [fields], returning=True)
    _pairs_insert(new_id, project_id=old.project_id, task_id=old.task_id, annotator_id=annotator.pk, groups=groups)
    return as_saved(Ranking(id=new_id, **fields)), True
