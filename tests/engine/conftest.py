"""The engine fixtures live in tests/engine/fixtures.py (imported by tests/conftest.py, so one
engine serves tests/engine and tests/serving alike)."""

from tests.engine.fixtures import TINY_NAME  # noqa: F401 - the engine tests import it from here
