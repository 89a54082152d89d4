"""Start the web server, one Celery worker and, when the engine is vLLM, the engine supervisor
(`manage.py run_engines`) together (the embedded default's `make run`).

Ctrl-C (SIGINT) or SIGTERM stops them all cleanly; if one exits, the others are stopped too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Run gunicorn on RLHF_BIND (127.0.0.1:8000) and a Celery worker (queues gpu, default) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=settings.RLHF_BIND, help="host:port (default: RLHF_BIND)")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--threads", type=int, default=8)

    def handle(self, *args, bind: str, web_workers: int, threads: int, **options):
        bin_dir = os.path.dirname(sys.executable)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        web_cmd = [os.path.join(bin_dir, "gunicorn"), "config.wsgi", "--bind", bind,
                   "--workers", str(web_workers), "--threads", str(threads), "--timeout", "600",
                   "--graceful-timeout", "5", "--access-logfile", "-", "--log-level", "warning"]
        # solo pool: one job at a time in the worker process itself, which is what one
        # CPU/GPU host can take; more hosts means more workers, not a bigger pool.
        worker_cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu,default",
                      "--pool", "solo", "-n", "embedded@%h", "--loglevel", "INFO", "--without-gossip",
                      "--without-mingle"]
        from serving.engine_choice import VLLM, serving_engine

        engine = serving_engine()
        procs: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            if engine.name == VLLM and not engine.problem:
                # The engine supervisor: vLLM for the promoted policy (its first answer comes a
                # minute or two after start; /v1 says 503 "engine_starting" until then).
                procs["engines"] = subprocess.Popen([sys.executable, "manage.py", "run_engines"], env=env,
                                                    start_new_session=True, cwd=settings.BASE_DIR)
            self.stdout.write(f"inference engine: {engine.name} ({engine.why})"
                              + (f"; it cannot run: {engine.problem}" if engine.problem else ""))
            procs["worker"] = subprocess.Popen(worker_cmd, env=env, start_new_session=True)
            procs["web"] = subprocess.Popen(web_cmd, env=env, start_new_session=True)
            self._wait_until_up(bind, procs)
            self.stdout.write(self.style.SUCCESS(
                f"serving on http://{bind}/ with one Celery worker (database: "
                f"{connection.vendor}, broker: "
                f"{settings.CELERY_BROKER_URL.split('://')[0]}, engine: {engine.name}); Ctrl-C stops all"))
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with code {proc.returncode}; stopping")
                        stopping = True
                time.sleep(0.3)
        finally:
            self._shutdown(procs)

    def _wait_until_up(self, bind: str, procs: dict[str, subprocess.Popen]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs.values()):
                return
            try:
                urllib.request.urlopen(f"http://{bind}/healthz", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # up, maybe not healthy yet (the worker may still be starting)
            except OSError:
                time.sleep(0.3)

    def _shutdown(self, procs: dict[str, subprocess.Popen]) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it")
                proc.kill()
                proc.wait()
        self.stdout.write("stopped")
