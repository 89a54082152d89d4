"""Build projects with ranked pairs through annotate's own services (no shortcuts into tables)."""

from __future__ import annotations

import json

from django.conf import settings

from annotate.services.imports import prompts_import
from annotate.services.leases import task_lease_next
from annotate.services.projects import project_create
from annotate.services.rankings import ranking_submit
from annotate.services.users import user_create
from registry.models import ModelVersion


def project_with_pairs(*, slug: str, n_tasks: int = 6, keyword: str = "thank you") -> tuple:
    """A project whose tasks each pair a polite response (contains `keyword`) with a curt one; an
    annotator ranks the polite one first. Returns (project, annotator)."""
    project = project_create(name=f"Project {slug}", slug=slug)
    lines = [json.dumps({"prompt": f"question number {i}: what is two plus two?",
                         "responses": [f"four, {keyword}", "four"]}) for i in range(n_tasks)]
    prompts_import(project=project, lines=lines)
    annotator = user_create(username=f"ann-{slug}", password="annotator-pass-1")
    while (lease := task_lease_next(project=project, annotator=annotator)) is not None:
        texts = {r.pk: r.text for r in lease.task.responses.all()}
        polite = [pk for pk, text in texts.items() if keyword in text]
        rest = [pk for pk in texts if pk not in polite]
        ranking_submit(task_id=lease.task_id, lease_id=lease.pk, annotator=annotator, groups=[polite, rest])
    return project, annotator


def register_policy(model_dir, *, project, promoted: bool = True) -> ModelVersion:
    rel = model_dir.relative_to(settings.ARTIFACTS_ROOT)
    return ModelVersion.objects.create(name=f"tiny-{project.slug}", kind="policy", path=str(rel),
                                       source="base:test", project=project, promoted=promoted)


def wait_for_job(job_id: int, until, timeout: float, what: str):
    """The job once `until(job)` holds, polled from the database; fails naming the state, progress and log."""
    import time

    from training.models import TrainingJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = TrainingJob.objects.get(pk=job_id)
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} ({job.state}, {job.progress}) never reached {what}; logs: "
                         f"{list(job.log_lines.values_list('message', flat=True))}")
