"""A wrong environment variable, an unreachable database, a missing or corrupt model: one clear
line saying what is wrong, no traceback as the only message."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("var", "value", "expected"), [
    ("DATABASE_URL", "mysql://root@localhost/x", "DATABASE_URL='mysql://root@localhost/x' is not understood"),
    ("CELERY_BROKER_URL", "amqp://guest@localhost//", "CELERY_BROKER_URL='amqp://guest@localhost//' is not understood"),
    ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG='maybe' is not a boolean"),
    ("RLHF_LEASE_SECONDS", "ten", "RLHF_LEASE_SECONDS='ten' is not an integer"),
])
def test_bad_environment_variable_stops_with_one_line(var, value, expected, tmp_path):
    done = manage("check", **{var: value, "RLHF_DATA_DIR": str(tmp_path)})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("configuration error: ") and expected in last


def test_unreachable_database_says_so(tmp_path):
    done = manage("bootstrap", "--skip-model", DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere",
                  RLHF_DATA_DIR=str(tmp_path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "cannot reach the database" in done.stderr and "DATABASE_URL" in done.stderr


def test_missing_model_file_says_so(tmp_path):
    manage("migrate", "-v0", DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", RLHF_DATA_DIR=str(tmp_path))
    done = manage("import_model", str(tmp_path / "nope.gguf"), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
                  RLHF_DATA_DIR=str(tmp_path))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "nope.gguf does not exist" in done.stderr


def test_corrupt_gguf_says_so(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    manage("migrate", "-v0", DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", RLHF_DATA_DIR=str(tmp_path))
    done = manage("import_model", str(bad), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
                  RLHF_DATA_DIR=str(tmp_path))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "could not load" in done.stderr and "broken.gguf" in done.stderr
