"""Reads about projects: listing, counts, round progress."""

from __future__ import annotations

from django.db.models import QuerySet

from config.errors import NotFound

from ..models import Demonstration, Pair, Project, Prompt, Ranking, RankingTask, Round, rules


def project_list() -> QuerySet[Project]:
    return Project.objects.order_by("id")


def project_get(*, project_id: int) -> Project:
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        raise NotFound(f"project {project_id} does not exist")
    return project


def project_counts(*, project: Project) -> dict:
    tasks = RankingTask.objects.filter(project=project)
    return {
        "prompts": Prompt.objects.filter(project=project).count(),
        "tasks": tasks.count(),
        "tasks_complete": tasks.filter(rules.task_complete()).count(),
        "rankings": Ranking.objects.live().filter(project=project).count(),
        "pairs": Pair.objects.live().filter(project=project).count(),
        "demonstrations": Demonstration.objects.filter(project=project).count(),
    }


def round_is_complete(round: Round) -> bool:
    """True when the round has tasks and every one of them has its k rankings."""
    tasks = RankingTask.objects.filter(round=round)
    return tasks.exists() and not tasks.exclude(rules.task_complete()).exists()


def round_progress(*, round: Round) -> dict:
    tasks = RankingTask.objects.filter(round=round)
    total = tasks.count()
    complete = tasks.filter(rules.task_complete()).count()
    return {"tasks": total, "tasks_complete": complete, "complete": total > 0 and complete == total}
