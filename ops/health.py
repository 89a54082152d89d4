"""GET /healthz: one JSON entry per part (database, broker, worker, default model, inference engine);
200 when all are well, 503 naming what failed."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from config.errors import public_text


def _check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True, "vendor": connection.vendor}


def _check_broker() -> dict:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return {"ok": True, "transport": conn.transport.driver_type}


def _check_worker() -> dict:
    from training.models import WorkerHeartbeat

    cutoff = timezone.now() - timedelta(seconds=settings.RLHF_WORKER_STALE_SECONDS)
    alive = list(WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).values("hostname", "queues"))
    if not alive:
        return {"ok": False, "error": f"no Celery worker seen in the last "
                                      f"{settings.RLHF_WORKER_STALE_SECONDS} s; start one with "
                                      "`celery -A config worker -Q gpu,default`"}
    return {"ok": True, "workers": alive}


def _check_default_model() -> dict:
    from registry.services import default_model_version

    version = default_model_version()
    if version is None:
        return {"ok": False, "error": f"default model {settings.RLHF_DEFAULT_MODEL!r} is not registered; "
                                      "run `python manage.py bootstrap`"}
    path = settings.ARTIFACTS_ROOT / version.path
    if not (path / "config.json").is_file():
        # The path relative to the artifacts folder: /healthz is anonymous.
        return {"ok": False, "error": f"model files missing for version {version.id} ({version.path} in the "
                                      "artifacts folder); run `python manage.py bootstrap`"}
    return {"ok": True, "id": version.id, "name": version.name}


def _check_engine() -> dict:
    from serving.engines import engine_status

    return engine_status()


CHECKS = {
    "database": _check_database,
    "broker": _check_broker,
    "worker": _check_worker,
    "default_model": _check_default_model,
    "engine": _check_engine,
}


@require_GET
def healthz(request):
    parts: dict[str, dict] = {}
    for name, check in CHECKS.items():
        try:
            parts[name] = check()
        except Exception as exc:  # each part reports its own failure; the others still run
            parts[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()}
    failed = [name for name, part in parts.items() if not part["ok"]]
    body = {"status": "ok" if not failed else "unhealthy", "failed": failed, "checks": public_text(parts)}
    return JsonResponse(body, status=200 if not failed else 503)
