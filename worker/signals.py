"""Worker liveness: each Celery worker writes a heartbeat row every few seconds.

The row lives in the database (not in the broker) so /healthz and the stale-job sweep read one
place, whatever broker is configured.
"""

from __future__ import annotations

import logging
import os
import threading

from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 2.0
_stop = threading.Event()


def _beat(hostname: str, queues: list[str]) -> None:
    from django.db import close_old_connections
    from django.utils import timezone

    from .models import WorkerHeartbeat

    started = timezone.now()
    while not _stop.is_set():
        try:
            close_old_connections()
            WorkerHeartbeat.objects.update_or_create(
                hostname=hostname,
                defaults={"queues": queues, "pid": os.getpid(), "started_at": started,
                          "last_seen": timezone.now()},
            )
        except Exception as exc:  # the database may be briefly away; keep beating
            log.warning("worker heartbeat failed: %s", exc)
        _stop.wait(INTERVAL_SECONDS)


@worker_ready.connect
def _start_heartbeat(sender=None, **_kwargs) -> None:
    hostname = sender.hostname
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    threading.Thread(target=_beat, args=(hostname, queues), daemon=True, name="heartbeat").start()


@worker_shutdown.connect
def _stop_heartbeat(sender=None, **_kwargs) -> None:
    _stop.set()
    try:
        from .models import WorkerHeartbeat

        WorkerHeartbeat.objects.filter(hostname=sender.hostname).delete()
    except Exception:  # shutting down; the row simply goes stale
        pass
