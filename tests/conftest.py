"""Fixtures shared by the whole suite: a real Celery worker process on the configured broker,
a tiny model built from a config, API clients."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from tests.engine.fixtures import (  # noqa: F401 - one real vLLM per session, for tests/engine and tests/serving
    engine,
    engine_artifacts,
    engine_session,
    engine_tiny_model_dir,
)

REPO = Path(__file__).resolve().parent.parent


def database_url_for(db: dict) -> str:
    """The DATABASE_URL a subprocess needs to reach the database this test run uses."""
    backend = db["ENGINE"].rsplit(".", 1)[-1]
    if backend == "sqlite3":
        name = str(db["NAME"])
        if name in (":memory:", "") or "mode=memory" in name:
            pytest.skip("a worker process cannot share an in-memory SQLite test database")
        return f"sqlite:///{name}"
    user = db.get("USER") or "postgres"
    auth = user + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, hostname: str, log: Path):
        self.proc, self.hostname, self.log = proc, hostname, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_worker(tmp_dir: Path, *, queues: str = "gpu,default", extra_env: dict | None = None) -> WorkerProcess:
    """Start `celery worker` as a real process on the same database and broker as the tests."""
    hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
    env = {**os.environ, "DATABASE_URL": database_url_for(settings.DATABASES["default"]),
           "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "RLHF_DATA_DIR": str(settings.DATA_DIR),
           "RLHF_ARTIFACTS_ROOT": str(settings.ARTIFACTS_ROOT), "PYTHONUNBUFFERED": "1",
           "RLHF_SERVING_ENGINE": settings.RLHF_SERVING_ENGINE,
           **(extra_env or {})}
    if settings.CELERY_RESULT_BACKEND:
        env["CELERY_RESULT_BACKEND"] = settings.CELERY_RESULT_BACKEND
    log = tmp_dir / f"{hostname.split('@')[0]}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "--pool", "solo",
         "-n", hostname, "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
    )
    worker = WorkerProcess(proc, hostname, log)
    from training.models import WorkerHeartbeat

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{worker.output()[-3000:]}")
        if WorkerHeartbeat.objects.filter(hostname=hostname).exists():
            return worker
        time.sleep(0.2)
    worker.stop()
    raise RuntimeError(f"celery worker did not report in 60 s:\n{worker.output()[-3000:]}")


@pytest.fixture(autouse=True)
def _serving_engine_default(settings):
    """Tests run on the transformers engine unless they ask for vLLM (tests/serving's engine
    fixtures): a managed vLLM needs its supervisor, which only those tests start."""
    settings.RLHF_SERVING_ENGINE = "transformers"


@pytest.fixture(autouse=True)
def _fresh_counters():
    """Throttle counters live in the shared cache (a file cache that outlives the run): each test
    starts with none, so one test's failed sign-ins do not throttle the next."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    """A real worker process for one test (data must be committed: transactional_db)."""
    from config.celery import app

    if settings.CELERY_BROKER_URL.startswith("redis"):
        with app.connection_for_write() as conn:  # no stale messages from an earlier run
            conn.default_channel.client.flushdb()
    worker = start_worker(tmp_path)
    yield worker
    worker.stop()


@pytest.fixture
def admin_client(db):
    """An API client signed in as a new admin (a superuser); with a live worker the test asks for
    transactional_db as well, which then wins."""
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    user = get_user_model().objects.create_superuser(username=f"admin-{uuid.uuid4().hex[:8]}", password="x")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def tiny_model_dir(tmp_path) -> Path:
    """A tiny causal LM (2 layers, width 64) with a tiny byte-level BPE tokenizer, saved as an HF dir."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path / "tiny-model")


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped, saying so, on a machine without it."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in marked:
            item.add_marker(skip)
