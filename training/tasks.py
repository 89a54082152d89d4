"""Celery tasks. Thin: they take ids, check state first (in the services), import torch/rlhf
inside the body, record failures on the job row and re-raise."""

from __future__ import annotations

import socket

from celery import shared_task


@shared_task(name="training.ping", queue="default")
def ping() -> dict:
    """Round-trip check: answers with the worker's host name."""
    return {"pong": True, "host": socket.gethostname()}


@shared_task(name="training.run_job", queue="gpu", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self, job_id: int) -> str:
    from .runner import job_run

    return job_run(job_id=job_id, hostname=self.request.hostname or socket.gethostname())
