"""One real vLLM server per test session, on a tiny model built in the test (no downloads), shared
by tests/engine (the engine itself) and tests/serving (/v1 forwarding to it). tests/conftest.py
imports these fixtures so that the whole run has one definition of them, hence one engine.

The engine runs from its own virtualenv (scripts/ensure_engine.sh); without it these tests skip.
Starting it costs about a minute on two busy cores. A test that has to stop it (the kill test, the
promotion test, which needs the memory for two engines of its own) leaves it stopped, and the next
test that needs it starts it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from enginectl.engine_process import EngineConfig, EngineProcess, engine_python, engine_venv

TINY_NAME = "tiny"
START_TIMEOUT = 900  # seconds; a cold start with torch.compile takes ~1-3 min on two shared cores


def tiny_engine_config(model: Path, *, served_model_name: str = TINY_NAME, log_path: Path | None = None,
                       **overrides) -> EngineConfig:
    """What every test engine uses: fp32 (parity with our fp32 sampler), 1 GiB of KV cache, short context."""
    return EngineConfig(model=model, served_model_name=served_model_name, max_model_len=512, dtype="float32",
                        kv_cache_space_gib=1, log_path=log_path, **overrides)


def require_engine_venv() -> None:
    if engine_python() is None:
        pytest.skip(f"no engine virtualenv at {engine_venv()} (run scripts/ensure_engine.sh, or set ENGINE_VENV)")


@pytest.fixture(scope="session")
def engine_artifacts(tmp_path_factory) -> Path:
    """An artifacts root with two engine-compatible tiny policies that answer differently."""
    from tests.engine.engine_tiny_model import build_engine_tiny_model

    root = tmp_path_factory.mktemp("engine-artifacts")
    build_engine_tiny_model(root / "policies" / "a", seed=2)
    build_engine_tiny_model(root / "policies" / "b", seed=3)
    return root


@pytest.fixture(scope="session")
def engine_tiny_model_dir(engine_artifacts) -> Path:
    return engine_artifacts / "policies" / "a"


@pytest.fixture(scope="session")
def engine_session(engine_tiny_model_dir, tmp_path_factory):
    """The session's engine on policy A; not started until a test asks for `engine`."""
    config = tiny_engine_config(engine_tiny_model_dir, seed=0,
                                log_path=tmp_path_factory.mktemp("engine-log") / "vllm.log")
    engine = EngineProcess(config)
    yield engine
    engine.stop()


@pytest.fixture
def engine(engine_session) -> EngineProcess:
    """The session's engine, running (started now if it is not)."""
    require_engine_venv()
    if not engine_session.is_running():
        engine_session.config.port = None  # a fresh port: the old one may still be in TIME_WAIT
        engine_session.start_and_wait(START_TIMEOUT)
    return engine_session
