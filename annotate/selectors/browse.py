"""The admin's prompt browser: a page of a project's prompts (searchable), each with its tasks, the
tasks' responses and the rankings annotators made of them (revised ones included, marked)."""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q, TextField
from django.db.models.functions import Cast

from ..models import Project, Prompt, Ranking, RankingTask, TaskResponse

PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
FILTERS = ("all", "with_tasks", "without_tasks", "open", "complete")


def _prompt_filter(qs, *, q: str, status: str):
    q = q.strip()
    if q:
        # "#12" or "12" also finds prompt 12; the text search covers plain prompts and chat messages.
        by_text = Q(text__icontains=q) | Q(messages_text__icontains=q)
        digits = q.lstrip("#")
        qs = qs.annotate(messages_text=Cast("messages", TextField()))
        qs = qs.filter(by_text | Q(pk=int(digits))) if digits.isdigit() else qs.filter(by_text)
    if status == "with_tasks":
        qs = qs.filter(tasks__isnull=False).distinct()
    elif status == "without_tasks":
        qs = qs.filter(tasks__isnull=True)
    elif status == "open":
        qs = qs.filter(tasks__completed_at__isnull=True, tasks__isnull=False).distinct()
    elif status == "complete":
        qs = qs.filter(tasks__completed_at__isnull=False).distinct()
    return qs


def _task_out(task: RankingTask) -> dict:
    responses = [link.response for link in task.task_responses.all()]
    return {
        "id": task.pk, "round": task.round.number if task.round else None,
        "rankings_needed": task.rankings_needed, "rankings_done": task.rankings_done,
        "complete": task.completed_at is not None, "gold_response": task.gold_response_id,
        "responses": [{"id": r.pk, "text": r.text, "source": r.source, "model_name": r.model_name,
                       "model_version_id": r.model_version_id,
                       "truncated": (r.sampling or {}).get("finish_reason") == "length"} for r in responses],
        "rankings": [{"id": r.pk, "annotator": r.annotator.username, "groups": r.groups, "flags": r.flags,
                      "rationale": r.rationale, "time_spent_ms": r.time_spent_ms, "created_at": r.created_at,
                      "revises": r.revises_id, "superseded": r.superseded_at is not None}
                     for r in task.rankings.all()],
    }


def prompts_page(*, project: Project, q: str = "", status: str = "all", page: int = 1,
                 page_size: int = PAGE_SIZE) -> dict:
    """{count, page, page_size, pages, results}: prompts in id order, each with its tasks."""
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    qs = _prompt_filter(Prompt.objects.filter(project=project), q=q, status=status if status in FILTERS else "all")
    count = qs.count()
    pages = max(1, -(-count // page_size))
    page = max(1, min(page, pages))
    tasks = (RankingTask.objects.select_related("round").order_by("id")
             .prefetch_related(Prefetch("task_responses", queryset=TaskResponse.objects.select_related("response")),
                               Prefetch("rankings", queryset=Ranking.objects.select_related("annotator").order_by("id"))))
    rows = (qs.order_by("id").annotate(n_demonstrations=Count("demonstrations", distinct=True))
            .prefetch_related(Prefetch("tasks", queryset=tasks))[(page - 1) * page_size: page * page_size])
    return {
        "count": count, "page": page, "page_size": page_size, "pages": pages,
        "results": [{"id": p.pk, "text": p.text, "messages": p.messages, "tags": p.tags, "source": p.source,
                     "reference": p.reference, "created_at": p.created_at, "demonstrations": p.n_demonstrations,
                     "tasks": [_task_out(t) for t in p.tasks.all()]} for p in rows],
    }
