"""Training data snapshots: pairs, consensus rankings and demonstrations as rows.

The worker freezes a snapshot by id when it launches a job (`pair_ids`, `demonstration_ids`)
and reads the rows later with those ids, so rankings made meanwhile do not leak in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import islice

from ..models import Demonstration, Pair, Project, Ranking, RankingTask, Round, TaskResponse
from .rows import completion_value, is_conversational, lineage, prompt_value

CHUNK = 2000


def chunks(iterable: Iterable, size: int) -> Iterator[list]:
    it = iter(iterable)
    while batch := list(islice(it, size)):
        yield batch


def pair_ids(*, project: Project, round: Round | None = None) -> list[int]:
    """The pairs a job launched now trains on: those of live rankings (not of revised ones)."""
    qs = Pair.objects.live().filter(project=project)
    if round is not None:
        qs = qs.filter(task__round=round)
    return list(qs.order_by("id").values_list("id", flat=True))


def pairs_rows(*, project: Project, ids: list[int] | None = None, round: Round | None = None) -> Iterator[dict]:
    """Per-annotator pairs: prompt, chosen, rejected, margin (what reward-model and DPO
    trainers read as they are) plus who, where and the lineage of both responses."""
    conversational = is_conversational(project)
    # Given ids (a job's snapshot) are read as they are, revised or not: the job trains on what it
    # was launched with. Without ids, only the pairs of live rankings.
    qs = (Pair.objects.filter(project=project) if ids is not None else Pair.objects.live().filter(project=project))
    qs = (qs
          .select_related("winner", "loser", "task__prompt", "task__round", "annotator").order_by("id"))
    if round is not None:
        qs = qs.filter(task__round=round)
    id_batches = chunks(ids, CHUNK) if ids is not None else [None]
    for batch in id_batches:
        page = qs if batch is None else qs.filter(pk__in=batch)
        for pair in page.iterator(chunk_size=CHUNK):
            prompt = pair.task.prompt
            yield {
                "prompt": prompt_value(prompt, conversational),
                "chosen": completion_value(pair.winner.text, conversational),
                "rejected": completion_value(pair.loser.text, conversational),
                "margin": pair.margin,
                "annotator": pair.annotator.username,
                "task": pair.task_id,
                "round": pair.task.round.number if pair.task.round else None,
                "ranking": pair.ranking_id,
                "pair": pair.pk,
                "prompt_id": prompt.pk,
                "chosen_id": pair.winner_id,
                "rejected_id": pair.loser_id,
                "chosen_lineage": lineage(pair.winner),
                "rejected_lineage": lineage(pair.loser),
            }


def training_pairs(*, project: Project, ids: list[int]) -> Iterator[dict]:
    """Pairs in the shape the reward-model and DPO stages read: text completions (never chat
    wrappers), a margin of groups apart - 1 (adjacent responses, the weakest preference, carry none),
    and the ids that let a stage hold out whole prompts and count annotators' consensus."""
    qs = (Pair.objects.filter(project=project).select_related("winner", "loser", "task__prompt", "annotator")
          .order_by("id"))
    for batch in chunks(ids, CHUNK):
        for pair in qs.filter(pk__in=batch).iterator(chunk_size=CHUNK):
            prompt = pair.task.prompt
            yield {"prompt": prompt.messages or prompt.text, "chosen": pair.winner.text,
                   "rejected": pair.loser.text, "margin": max(0, pair.margin - 1), "prompt_id": prompt.pk,
                   "task_id": pair.task_id, "annotator": pair.annotator.username,
                   "chosen_id": pair.winner_id, "rejected_id": pair.loser_id}


def borda_groups(rankings: list[list[list[int]]]) -> list[list[int]]:
    """Aggregate several rankings of the same responses into one: each response scores, per
    ranking, the number of responses it beats minus the number that beat it (a Borda count that
    understands ties); equal totals share a group."""
    score: dict[int, int] = defaultdict(int)
    for groups in rankings:
        sizes = [len(g) for g in groups]
        total = sum(sizes)
        above = 0
        for group in groups:
            below = total - above - len(group)
            for rid in group:
                score[rid] += below - above
            above += len(group)
    ordered: list[list[int]] = []
    for rid in sorted(score, key=lambda r: (-score[r], r)):
        if ordered and score[ordered[-1][0]] == score[rid]:
            ordered[-1].append(rid)
        else:
            ordered.append([rid])
    return ordered


def consensus_rows(*, project: Project, task_ids: list[int] | None = None,
                   round: Round | None = None) -> Iterator[dict]:
    """One aggregated ranking per task that has rankings, with the responses and their lineage."""
    conversational = is_conversational(project)
    tasks = RankingTask.objects.filter(project=project, rankings_done__gt=0).order_by("id")
    if round is not None:
        tasks = tasks.filter(round=round)
    if task_ids is not None:
        tasks = tasks.filter(pk__in=task_ids)
    for batch in chunks(tasks.select_related("prompt", "round").iterator(chunk_size=500), 500):
        by_task = defaultdict(list)
        for task_id, groups in (Ranking.objects.live().filter(task__in=[t.pk for t in batch])
                                .order_by("id").values_list("task_id", "groups")):
            by_task[task_id].append(groups)
        responses = defaultdict(dict)
        for link in TaskResponse.objects.filter(task__in=[t.pk for t in batch]).select_related("response"):
            responses[link.task_id][link.response_id] = link.response
        for task in batch:
            yield {
                "task": task.pk,
                "round": task.round.number if task.round else None,
                "prompt_id": task.prompt_id,
                "prompt": prompt_value(task.prompt, conversational),
                "ranking": borda_groups(by_task[task.pk]),
                "n_rankings": len(by_task[task.pk]),
                "responses": {rid: r for rid, r in responses[task.pk].items()},
                "_conversational": conversational,
            }


def consensus_pairs_rows(*, project: Project, round: Round | None = None) -> Iterator[dict]:
    """Pairs derived from each task's consensus ranking instead of from every annotator."""
    from ..services.rankings import pairs_from_groups

    for row in consensus_rows(project=project, round=round):
        conversational = row["_conversational"]
        responses = row["responses"]
        for winner, loser, margin in pairs_from_groups(row["ranking"]):
            yield {
                "prompt": row["prompt"],
                "chosen": completion_value(responses[winner].text, conversational),
                "rejected": completion_value(responses[loser].text, conversational),
                "margin": margin,
                "task": row["task"],
                "round": row["round"],
                "n_rankings": row["n_rankings"],
                "prompt_id": row["prompt_id"],
                "chosen_id": winner,
                "rejected_id": loser,
                "chosen_lineage": lineage(responses[winner]),
                "rejected_lineage": lineage(responses[loser]),
            }


def demonstration_ids(*, project: Project) -> list[int]:
    return list(Demonstration.objects.filter(project=project).order_by("id").values_list("id", flat=True))


def demonstrations_rows(*, project: Project, ids: list[int] | None = None) -> Iterator[dict]:
    """SFT rows: the prompt as chat messages followed by the human-written answer."""
    qs = (Demonstration.objects.filter(project=project)
          .select_related("prompt", "response", "annotator").order_by("id"))
    for batch in (chunks(ids, CHUNK) if ids is not None else [None]):
        page = qs if batch is None else qs.filter(pk__in=batch)
        for demo in page.iterator(chunk_size=CHUNK):
            yield {
                "messages": demo.prompt.as_messages() + [{"role": "assistant", "content": demo.response.text}],
                "prompt_id": demo.prompt_id,
                "demonstration": demo.pk,
                "response_id": demo.response_id,
                "based_on_response": demo.response.parent_response_id,
                "annotator": demo.annotator.username,
            }
