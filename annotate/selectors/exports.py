"""The export formats as row iterators; the view streams them as JSONL."""

from __future__ import annotations

from collections.abc import Iterator

from ..models import Project, Prompt, Ranking, TaskResponse
from .rows import is_conversational, lineage, prompt_value
from .training import chunks, consensus_pairs_rows, consensus_rows, demonstrations_rows, pairs_rows

FORMATS = ("pairs", "rankings", "sft", "prompts")


def _rankings_rows(project: Project) -> Iterator[dict]:
    conversational = is_conversational(project)
    qs = (Ranking.objects.live().filter(project=project).select_related("task__prompt", "task__round", "annotator")
          .order_by("id"))
    for batch in chunks(qs.iterator(chunk_size=1000), 1000):
        responses: dict[int, list] = {}
        for link in (TaskResponse.objects.filter(task__in={r.task_id for r in batch})
                     .select_related("response").order_by("task", "position")):
            responses.setdefault(link.task_id, []).append(link.response)
        for r in batch:
            yield {
                "id": r.pk, "task": r.task_id, "round": r.task.round.number if r.task.round else None,
                "prompt_id": r.task.prompt_id, "prompt": prompt_value(r.task.prompt, conversational),
                "annotator": r.annotator.username, "ranking": r.groups, "shown_order": r.shown_order,
                "flags": r.flags, "rationale": r.rationale, "time_spent_ms": r.time_spent_ms,
                "gold_correct": r.gold_correct, "created_at": r.created_at.isoformat(),
                "responses": [{"id": x.pk, "text": x.text, "lineage": lineage(x)} for x in responses[r.task_id]],
            }


def _consensus_rankings_rows(project: Project) -> Iterator[dict]:
    for row in consensus_rows(project=project):
        yield {
            "task": row["task"], "round": row["round"], "prompt_id": row["prompt_id"], "prompt": row["prompt"],
            "ranking": row["ranking"], "n_rankings": row["n_rankings"],
            "responses": [{"id": x.pk, "text": x.text, "lineage": lineage(x)} for x in row["responses"].values()],
        }


def _prompts_rows(project: Project) -> Iterator[dict]:
    for p in Prompt.objects.filter(project=project).order_by("id").iterator(chunk_size=2000):
        head = {"messages": p.messages} if p.messages else {"prompt": p.text}
        yield {**head, "id": p.pk, "tags": p.tags, "reference": p.reference, "source": p.source}


def export_rows(*, project: Project, format: str, consensus: bool = False) -> Iterator[dict]:
    if format == "pairs":
        return consensus_pairs_rows(project=project) if consensus else pairs_rows(project=project)
    if format == "rankings":
        return _consensus_rankings_rows(project) if consensus else _rankings_rows(project)
    if format == "sft":
        return demonstrations_rows(project=project)
    return _prompts_rows(project)
