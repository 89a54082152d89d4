"""What an annotator is shown for a leased task, how many tasks are left for them, and their last
ranking (which the ranking page offers to revise)."""

from __future__ import annotations

from django.db import connection
from django.db.models import Exists, F, OuterRef

from ..models import Lease, Prompt, Ranking, RankingTask, Response, TaskResponse
from ..services.sql_rows import json_out


def task_as_shown(lease: Lease) -> dict:
    """The task as the lease's annotator sees it: the prompt and the responses in the order
    shuffled for them, and nothing about where the responses came from (blind ranking) except
    whether a response was cut off at its token limit, which the text alone does not say. One
    query: this runs on every next-task request."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.id, r.text, p.id, p.text, p.messages, r.sampling FROM {TaskResponse._meta.db_table} tr "
            f"JOIN {Response._meta.db_table} r ON r.id = tr.response_id "
            f"JOIN {RankingTask._meta.db_table} t ON t.id = tr.task_id "
            f"JOIN {Prompt._meta.db_table} p ON p.id = t.prompt_id WHERE tr.task_id = %s",
            [lease.task_id])
        rows = cursor.fetchall()
    texts = {row[0]: row[1] for row in rows}
    cut = {row[0] for row in rows if (json_out(row[5]) or {}).get("finish_reason") == "length"}
    _, _, prompt_id, prompt_text, messages, _ = rows[0]
    return {"id": lease.task_id, "prompt_id": prompt_id, "prompt": prompt_text, "messages": json_out(messages),
            "responses": [{"id": rid, "text": texts[rid], "truncated": rid in cut} for rid in lease.shown_order]}


def tasks_remaining_for(*, project_id: int, annotator) -> int:
    """Open tasks of the project this annotator has not ranked, skipped or taken, plus the one they
    hold now: what "N left" on the ranking page counts."""
    theirs = Lease.objects.filter(task=OuterRef("pk"), annotator=annotator).exclude(status=Lease.Status.EXPIRED)
    untouched = (RankingTask.objects.filter(project_id=project_id, claimed__lt=F("rankings_needed"))
                 .exclude(Exists(theirs)).count())
    held = Lease.objects.filter(project_id=project_id, annotator=annotator, status=Lease.Status.ACTIVE).exists()
    return untouched + int(held)


def last_ranking_for(*, project_id: int, annotator) -> dict | None:
    """The annotator's newest live ranking in the project, with its task as they were shown it and
    whether it can still be revised (its round has not moved on to training)."""
    from ..services.rankings import OPEN_ROUND_STAGES

    ranking = (Ranking.objects.live().filter(project_id=project_id, annotator=annotator)
               .select_related("task__round").order_by("-id").first())
    if ranking is None:
        return None
    round_obj = ranking.task.round
    return {"id": ranking.pk, "groups": ranking.groups, "flags": ranking.flags, "rationale": ranking.rationale,
            "created_at": ranking.created_at, "revises": ranking.revises_id,
            "revisable": round_obj is None or round_obj.status in OPEN_ROUND_STAGES,
            "task": task_as_shown(Lease(task_id=ranking.task_id, shown_order=ranking.shown_order))}
