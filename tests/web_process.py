"""gunicorn serving the test database as a real process, as production runs it (the Django test
server is not gunicorn: it drains unread request bodies, for one)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

from tests.conftest import REPO, database_url_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Web:
    def __init__(self, log_dir: Path, **extra_env: str):
        self.port, self.log_dir, self.proc = free_port(), log_dir, None
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env

    def start(self) -> None:
        env = {**os.environ, "DATABASE_URL": database_url_for(settings.DATABASES["default"]),
               "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "RLHF_DATA_DIR": str(settings.DATA_DIR),
               "RLHF_ARTIFACTS_ROOT": str(settings.ARTIFACTS_ROOT), "RLHF_API_RATE_LIMIT": "0",
               **self.extra_env}
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.proc = subprocess.Popen(
            [str(gunicorn), "config.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--threads", "4",
             "--timeout", "60"], cwd=REPO, env=env, start_new_session=True,
            stdout=open(self.log_dir / f"web-{time.monotonic():.0f}.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while http_status(self.url + "/api/schema") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not come up on {self.url}")
            time.sleep(0.3)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
