"""Celery tasks. Thin: they take ids, check state first, import torch/rlhf inside the body."""

from __future__ import annotations

import socket

from celery import shared_task


@shared_task(name="worker.ping", queue="default")
def ping() -> dict:
    """Round-trip check: answers with the worker's host name."""
    return {"pong": True, "host": socket.gethostname()}
