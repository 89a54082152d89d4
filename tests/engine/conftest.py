"""One real vLLM server per test session, on a tiny model built in the test (no downloads).

The engine runs from its own virtualenv (scripts/ensure_engine.sh); without it these tests skip.
Starting it costs about a minute on two busy cores, so every engine test shares this one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from enginectl.engine_process import EngineConfig, EngineProcess, engine_python, engine_venv

TINY_NAME = "tiny"
START_TIMEOUT = 900  # seconds; a cold start with torch.compile takes ~1-3 min on two shared cores


@pytest.fixture(scope="session")
def engine_tiny_model_dir(tmp_path_factory) -> Path:
    from tests.engine.engine_tiny_model import build_engine_tiny_model

    return build_engine_tiny_model(tmp_path_factory.mktemp("engine-tiny"))


@pytest.fixture(scope="session")
def engine_session(request, tmp_path_factory):
    if engine_python() is None:
        pytest.skip(f"no engine virtualenv at {engine_venv()} (run scripts/ensure_engine.sh, or set ENGINE_VENV)")
    engine_tiny_model_dir = request.getfixturevalue("engine_tiny_model_dir")
    config = EngineConfig(model=engine_tiny_model_dir, served_model_name=TINY_NAME, max_model_len=512,
                          dtype="float32", kv_cache_space_gib=1, seed=0,
                          log_path=tmp_path_factory.mktemp("engine-log") / "vllm.log")
    engine = EngineProcess(config)
    engine.start_and_wait(START_TIMEOUT)
    yield engine
    engine.stop()


@pytest.fixture
def engine(engine_session) -> EngineProcess:
    """The session's engine, alive (the kill test ends it, and runs last for that reason)."""
    if not engine_session.is_running():
        pytest.fail(f"the session's engine is not running; last log lines:\n{engine_session.log_tail()}")
    return engine_session
