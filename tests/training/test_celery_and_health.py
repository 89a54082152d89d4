"""A Celery round trip through the configured broker and a real worker process; /healthz."""

import pytest
from django.conf import settings
from django.test import Client

from registry.models import ModelVersion
from training.models import WorkerHeartbeat


def _register_default_model(model_dir):
    rel = model_dir.relative_to(settings.ARTIFACTS_ROOT)
    return ModelVersion.objects.create(name=settings.RLHF_DEFAULT_MODEL, kind="policy", path=str(rel),
                                       source="base:test")


@pytest.fixture
def artifacts_model(tmp_path, settings):
    from tests.tiny_model import build_tiny_model

    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    return build_tiny_model(settings.ARTIFACTS_ROOT / "base" / "tiny")


def test_ping_round_trip_through_a_real_worker(celery_worker):
    from training.tasks import ping

    if not settings.CELERY_RESULT_BACKEND:
        pytest.skip("needs CELERY_RESULT_BACKEND (make test sets Redis)")
    result = ping.apply_async(queue="default")
    assert result.get(timeout=30)["pong"] is True
    beat = WorkerHeartbeat.objects.get(hostname=celery_worker.hostname)
    assert set(beat.queues) == {"gpu", "default"}


def test_healthz_is_200_with_worker_and_model(celery_worker, artifacts_model):
    _register_default_model(artifacts_model)
    response = Client().get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["failed"] == [] and all(part["ok"] for part in body["checks"].values())
    assert celery_worker.hostname in [w["hostname"] for w in body["checks"]["worker"]["workers"]]


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_naming_the_missing_worker_and_model():
    WorkerHeartbeat.objects.all().delete()
    response = Client().get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["failed"] == ["worker", "default_model"]
    assert "no Celery worker seen" in body["checks"]["worker"]["error"]
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]


@pytest.mark.django_db
def test_healthz_names_an_unreachable_broker():
    from config.celery import app

    saved = app.conf.broker_url, app.conf.broker_write_url
    app.conf.broker_url = app.conf.broker_write_url = "redis://127.0.0.1:1/0"
    try:
        body = Client().get("/healthz").json()
    finally:
        app.conf.broker_url, app.conf.broker_write_url = saved
    assert "broker" in body["failed"]
    assert "Error" in body["checks"]["broker"]["error"]


@pytest.mark.django_db
def test_healthz_names_missing_model_files(artifacts_model, settings):
    import shutil

    _register_default_model(artifacts_model)
    shutil.rmtree(artifacts_model)
    body = Client().get("/healthz").json()
    assert "default_model" in body["failed"]
    assert "model files missing" in body["checks"]["default_model"]["error"]
