"""Fixtures of the model API tests: two tiny policies (built once per run), a demo project serving
one of them, API keys, and a clean model cache per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_model


def build_policy(out_dir: Path, *, seed: int) -> Path:
    return build_tiny_model(out_dir, seed=seed, tie_embeddings=False)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """An artifacts root with two tiny policies that answer differently (different init seeds)."""
    root = tmp_path_factory.mktemp("serving-artifacts")
    build_policy(root / "policies" / "a", seed=0)
    build_policy(root / "policies" / "b", seed=1)
    return root


@pytest.fixture(autouse=True)
def _fresh_engine(settings, tiny_artifacts):
    from serving.engine import loaded_model_cache_clear

    settings.ARTIFACTS_ROOT = tiny_artifacts
    settings.RLHF_API_RATE_LIMIT = 0
    loaded_model_cache_clear()
    yield
    loaded_model_cache_clear()


@pytest.fixture
def _server_closes_connections(monkeypatch):
    """The live server's request threads close their database connections after each request, so
    the test database can be dropped at the end (persistent connections would outlive the threads)."""
    from django.db import connections

    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)


@pytest.fixture
def live(live_server, _server_closes_connections):
    return live_server


# The same /v1 tests on both engines: @both on a test runs it on the transformers engine and on a
# real vLLM (the session's engine, tests/engine/fixtures.py), which /v1 then forwards to.
both = pytest.mark.parametrize("engine_kind", ["transformers", pytest.param(
    "vllm", marks=[pytest.mark.engine, pytest.mark.slow])], indirect=True)


@pytest.fixture
def engine_kind(request, settings) -> str:
    """Which engine serves /v1 in this test: "transformers" unless parametrized with `both`. For
    "vllm" the artifacts root holds the policies the session's engine can serve (A is the one it runs)."""
    kind = getattr(request, "param", None)
    if kind is None:  # the suite's default (tests/conftest.py), or what the test set itself
        return settings.RLHF_SERVING_ENGINE
    settings.RLHF_SERVING_ENGINE = kind
    if kind == "vllm":
        request.getfixturevalue("engine")  # running
        settings.ARTIFACTS_ROOT = request.getfixturevalue("engine_artifacts")
    return kind


def register_engine(version, engine, *, state: str = "ready"):
    """An Engine row for a running EngineProcess, as the supervisor writes it once the engine answers."""
    from django.utils import timezone

    from serving.models import Engine

    return Engine.objects.create(model_version=version, state=state, served_name=engine.config.served_model_name,
                                 base_url=engine.base_url, pid=engine.pid, started_at=timezone.now(),
                                 ready_at=timezone.now() if state == "ready" else None)


@pytest.fixture
def demo(db, request, engine_kind):
    """Project "demo" with policy A promoted, and policy B registered beside it; on vLLM, A is
    served by the session's engine."""
    from annotate.models import Project
    from registry.models import ModelVersion

    project = Project.objects.create(name="Demo", slug="demo")
    a = ModelVersion.objects.create(name="policy-a", kind="policy", path="policies/a", source="test",
                                    project=project, promoted=True)
    b = ModelVersion.objects.create(name="policy-b", kind="policy", path="policies/b", source="test",
                                    project=project)
    if engine_kind == "vllm":
        register_engine(a, request.getfixturevalue("engine"))
    return {"project": project, "a": a, "b": b}


@pytest.fixture
def promote():
    """Make a version its project's served policy through the registry's promote service."""
    from registry.services import model_version_promote

    def run(version) -> None:
        model_version_promote(version=version)

    return run


@pytest.fixture
def api_key(db, admin_user) -> str:
    from serving.keys import api_key_create

    return api_key_create(name="tests", created_by=admin_user)[1]


@pytest.fixture
def annotator(db, django_user_model):
    return django_user_model.objects.create_user("ann", password="annotator-pass")


@pytest.fixture
def broken_artifacts(tmp_path, settings):
    """An artifacts root whose checkpoint directory is empty."""
    (tmp_path / "policies" / "a").mkdir(parents=True)
    settings.ARTIFACTS_ROOT = tmp_path
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)
