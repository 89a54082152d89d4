"""The Celery app. Queue "gpu" takes generation and training (one job at a time per worker);
queue "default" takes light work. Settings come from Django settings (CELERY_ prefix)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("rlhf")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue("default"), Queue("gpu")),
    task_default_queue="default",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # A GPU worker takes one message at a time, so a second job waits in the broker where
    # another host can pick it up, instead of sitting prefetched behind a long training run.
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks(["training"])


def _prepare_filesystem_broker() -> None:
    """kombu's filesystem transport expects its folders to exist."""
    from pathlib import Path

    from django.conf import settings

    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


if app.conf.broker_url and app.conf.broker_url.startswith("filesystem://"):
    _prepare_filesystem_broker()
