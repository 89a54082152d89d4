"""Ranking tasks: create them with their responses' lineage, mark gold tasks."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from config.errors import ApplicationError, NotFound

from ..models import Project, Prompt, RankingTask, Response, Round, TaskResponse

# finish_reason is how the sample ended: "stop" (EOS or stop string) or "length" (cut off at
# max_new_tokens, which the ranking page marks).
SAMPLING_KEYS = ("strategy", "temperature", "top_k", "top_p", "seed", "max_new_tokens", "finish_reason")
FINISH_REASONS = ("stop", "length")
MIN_RESPONSES, MAX_RESPONSES = 2, 8


def sampling_normalize(sampling: dict | None) -> dict:
    """Always the same keys (None where unknown), so exported rows share one schema."""
    sampling = sampling or {}
    if not isinstance(sampling, dict):
        raise ApplicationError("sampling must be an object", code="invalid_task")
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise ApplicationError(f"unknown sampling settings: {', '.join(unknown)}", code="invalid_task",
                               details={"allowed": list(SAMPLING_KEYS)})
    if sampling.get("finish_reason") not in (None, *FINISH_REASONS):
        raise ApplicationError(f"finish_reason must be one of {', '.join(FINISH_REASONS)}", code="invalid_task")
    return {key: sampling.get(key) for key in SAMPLING_KEYS}


def _response_from_spec(prompt: Prompt, spec: dict, index: int) -> Response:
    if not isinstance(spec, dict) or not isinstance(spec.get("text"), str) or not spec["text"].strip():
        raise ApplicationError(f"response {index} needs a non-empty text", code="invalid_task")
    source = spec.get("source", Response.Source.MODEL)
    if source not in Response.Source.values:
        raise ApplicationError(f"response {index}: source must be one of {', '.join(Response.Source.values)}",
                               code="invalid_task")
    version_id = spec.get("model_version_id")
    if version_id is not None and (not isinstance(version_id, int) or isinstance(version_id, bool)):
        raise ApplicationError(f"response {index}: model_version_id must be an integer", code="invalid_task")
    return Response(prompt=prompt, text=spec["text"], source=source, model_version_id=version_id,
                    model_name=spec.get("model_name") or "", sampling=sampling_normalize(spec.get("sampling")))


def tasks_bulk_insert(*, project: Project, round: Round | None, items: Sequence[tuple[Prompt, list[Response], int | None]],
                      closed: bool = False) -> list[RankingTask]:
    """Insert many tasks with a few bulk statements. Each item is (saved prompt, unsaved responses,
    gold index); the caller has validated them and holds the transaction. `closed` tasks are out
    of the open-task queue (all their slots claimed) until the caller opens them."""
    responses = [r for _, rs, _ in items for r in rs]
    Response.objects.bulk_create(responses, batch_size=2000)
    tasks = [RankingTask(project=project, round=round, prompt=prompt, rankings_needed=project.rankings_per_task,
                         claimed=project.rankings_per_task if closed else 0,
                         gold_response=rs[gold] if gold is not None else None)
             for prompt, rs, gold in items]
    RankingTask.objects.bulk_create(tasks, batch_size=2000)
    links = [TaskResponse(task=task, response=r, position=i)
             for task, (_, rs, _) in zip(tasks, items, strict=True) for i, r in enumerate(rs)]
    TaskResponse.objects.bulk_create(links, batch_size=4000)
    return tasks


@transaction.atomic
def tasks_create(*, project: Project, prompt: Prompt, responses: list[dict], round: Round | None = None,
                 gold_index: int | None = None) -> RankingTask:
    """One task for `prompt` with 2..8 new responses, each {text, source, model_version_id,
    model_name, sampling}. The worker's generate job calls this for each prompt of a round."""
    if prompt.project_id != project.pk:
        raise ApplicationError(f"prompt {prompt.pk} belongs to another project", code="invalid_task")
    if round is not None and round.project_id != project.pk:
        raise ApplicationError(f"round {round.pk} belongs to another project", code="invalid_task")
    if not isinstance(responses, list) or not MIN_RESPONSES <= len(responses) <= MAX_RESPONSES:
        raise ApplicationError(f"a task needs {MIN_RESPONSES} to {MAX_RESPONSES} responses", code="invalid_task")
    if gold_index is not None and not (isinstance(gold_index, int) and 0 <= gold_index < len(responses)):
        raise ApplicationError(f"gold_index must be an index into the {len(responses)} responses",
                               code="invalid_task")
    built = [_response_from_spec(prompt, spec, i) for i, spec in enumerate(responses)]
    return tasks_bulk_insert(project=project, round=round, items=[(prompt, built, gold_index)])[0]


@transaction.atomic
def task_gold_set(*, task: RankingTask, response_id: int | None) -> RankingTask:
    """Mark the known best response (None unmarks). Rankings already made keep their verdict."""
    if response_id is not None and not task.task_responses.filter(response_id=response_id).exists():
        raise NotFound(f"response {response_id} is not one of task {task.pk}'s responses")
    task.gold_response_id = response_id
    task.save(update_fields=["gold_response"])
    return task
