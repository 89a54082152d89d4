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
HOUSEKEEPING_EVERY = 5  # beats: every 10 s a worker sweeps stale jobs, lost messages and rounds
_stop = threading.Event()


def _beat(hostname: str, queues: list[str]) -> None:
    from django.db import close_old_connections
    from django.utils import timezone

    from .models import WorkerHeartbeat

    started = timezone.now()
    beats = 0
    while not _stop.is_set():
        beats += 1
        if beats % HOUSEKEEPING_EVERY == 1:
            _housekeeping()
        try:
            close_old_connections()
            _, created = WorkerHeartbeat.objects.update_or_create(
                hostname=hostname,
                defaults={"queues": queues, "pid": os.getpid(), "started_at": started,
                          "last_seen": timezone.now()},
            )
            if created or beats == 1:  # a worker that (re)starts runs nothing yet
                WorkerHeartbeat.objects.filter(hostname=hostname).update(current_job_id=None, idle_since=started)
        except Exception as exc:  # the database may be briefly away; keep beating
            log.warning("worker heartbeat failed: %s", exc)
        _stop.wait(INTERVAL_SECONDS)


def _housekeeping() -> None:
    """Any live worker resumes or fails jobs whose worker died (so none stays "running" forever),
    publishes again the messages of jobs a broker lost, and starts the next stage of self-running
    rounds. Cheap queries; safe when several workers do it at once."""
    try:
        from .services.lifecycle import jobs_republish_lost, jobs_sweep_stale
        from .services.rounds import rounds_advance

        jobs_sweep_stale()
        jobs_republish_lost()
        rounds_advance()
    except Exception as exc:
        log.warning("housekeeping failed: %s", exc)


def _fail_orphans(hostname: str) -> None:
    """Jobs this host was running before it restarted cannot be running now."""
    from .services.lifecycle import jobs_fail_orphans

    jobs_fail_orphans(hostname=hostname)


def _preload() -> None:
    """Import torch, transformers and rlhf once the worker is up, not when its first job starts:
    that import takes seconds, during which a job could neither start work nor see a cancel."""
    try:
        import rlhf.models  # noqa: F401
        import rlhf.sampling  # noqa: F401
    except Exception as exc:  # a job will report the real error
        log.warning("could not preload the training library: %s", exc)


@worker_ready.connect
def _start_heartbeat(sender=None, **_kwargs) -> None:
    hostname = sender.hostname
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    try:
        _fail_orphans(hostname)
    except Exception as exc:
        log.warning("could not check for orphaned jobs: %s", exc)
    threading.Thread(target=_beat, args=(hostname, queues), daemon=True, name="heartbeat").start()
    threading.Thread(target=_preload, daemon=True, name="preload").start()


@worker_shutdown.connect
def _stop_heartbeat(sender=None, **_kwargs) -> None:
    _stop.set()
    try:
        from .models import WorkerHeartbeat

        WorkerHeartbeat.objects.filter(hostname=sender.hostname).delete()
    except Exception:  # shutting down; the row simply goes stale
        pass
