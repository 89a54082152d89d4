"""Isolation of the annotation API from model serving: next -> submit latency (p50/p95/p99) with
no model traffic, then with S streaming /v1 chat completions kept in flight, in one run.

Starts the service's web process (gunicorn, `make run`'s 2 workers; threads per --threads) in a
scratch data folder (SQLite) with the bundled model promoted, plus `manage.py run_engines` when
the engine is vLLM, and drives it with bench/annotation_load.py's annotators.

    .venv/bin/python bench/isolation.py --engine vllm          # 16 streams, 4 annotators, 20 s each
    .venv/bin/python bench/isolation.py --engine transformers  # the fallback, streams in the web process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import annotation_load  # noqa: E402 - bench/ is not a package
from model_api import DEFAULT_MODEL, healthz, scratch_service, stop_all, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ADMIN = ("bench-admin", "bench-admin-password")


def streams(url: str, key: str, count: int, stop: threading.Event, done: list) -> list[threading.Thread]:
    """count clients, each streaming one long answer after another until stop."""
    def client(i: int) -> None:
        body = json.dumps({"model": "latest", "stream": True, "max_tokens": 256, "temperature": 0.7,
                           "messages": [{"role": "user", "content": f"Tell me a long story about a cat, number {i}."}]})
        while not stop.is_set():
            req = urllib.request.Request(f"{url}/v1/chat/completions", data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            try:
                with urllib.request.urlopen(req, timeout=600) as resp:
                    for _ in resp:
                        if stop.is_set():
                            break
                done.append(1)
            except OSError:
                time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("vllm", "transformers"), default="vllm")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("-C", "--annotators", type=int, default=4)
    parser.add_argument("-T", "--seconds", type=float, default=20)
    parser.add_argument("-M", "--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="rlhf-isolation-bench-"))
    env, manage, out = scratch_service(scratch, args.model_dir, RLHF_SERVING_ENGINE=args.engine,
                                       RLHF_LOG_LEVEL="WARNING", DJANGO_DEBUG="0")
    key = next(x for x in out.splitlines() if x.startswith("KEY=")).split()[0][4:]
    code = ("from django.contrib.auth import get_user_model as g; U=g(); "
            f"u=U(username={ADMIN[0]!r}, is_superuser=True, is_staff=True); u.set_password({ADMIN[1]!r}); u.save()")
    subprocess.run([*manage, "shell", "-c", code], env=env, cwd=REPO, check=True)
    port = annotation_load.socket.socket()
    port.bind(("127.0.0.1", 0))
    port_number = port.getsockname()[1]
    port.close()
    url = f"http://127.0.0.1:{port_number}"
    procs, logs = [], []

    def start(name: str, cmd: list[str]) -> None:
        logs.append(scratch / f"{name}.log")
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(logs[-1], "wb"),
                                      stderr=subprocess.STDOUT, start_new_session=True))

    stop = threading.Event()
    try:
        if args.engine == "vllm":
            start("engines", [*manage, "run_engines"])
        start("web", [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port_number}",
                      "--workers", str(args.workers), "--threads", str(args.threads), "--timeout", "600",
                      "--keep-alive", "30", "--log-level", "warning"])
        if args.engine == "vllm":
            wait_for(lambda: any(e["state"] == "ready" for e in
                                 healthz(url).get("checks", {}).get("engine", {}).get("engines", [])),
                     1200, "the vLLM engine", procs, logs)
        else:
            wait_for(lambda: healthz(url), 120, "the web process", procs, logs)
        admin = annotation_load.Client(url, annotation_load.Client(url).json(
            "POST", "/api/auth/token", {"username": ADMIN[0], "password": ADMIN[1]})["token"])
        project_id = annotation_load.setup_project(admin, args.tasks, 3, 2, 10000)
        tokens = annotation_load.make_annotators(admin, url, args.annotators)
        rows = {}
        for label, n_streams in (("idle", 0), (f"{args.streams} streams", args.streams)):
            done: list = []
            threads = streams(url, key, n_streams, stop, done)
            if n_streams:
                time.sleep(10)  # the streams are decoding before the annotators start
            result = annotation_load.run_load(url, project_id, tokens, args.annotators, args.seconds, None)
            lat = result["latencies"]
            rows[label] = {f"{ep}_p{q}_ms": annotation_load.pct(lat[ep], q) * 1000
                           for ep in ("next", "submit") for q in (50, 95, 99)}
            rows[label]["cycles_per_s"] = result["cycles"] / result["seconds"]
            rows[label]["streams_finished"] = len(done)
            stop.set()
            for t in threads:
                t.join(timeout=120)
            stop.clear()
            print(label, json.dumps(rows[label]), flush=True)
        print(f"\nengine {args.engine}, {args.annotators} annotators, {args.seconds:g} s per measure, gunicorn "
              f"{args.workers} x {args.threads}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}")
        print("| load | cycles/s | next p50/p95/p99 ms | submit p50/p95/p99 ms | streams finished |")
        print("|---|---|---|---|---|")
        for label, r in rows.items():
            print(f"| {label} | {r['cycles_per_s']:.0f} | {r['next_p50_ms']:.0f} / {r['next_p95_ms']:.0f} / "
                  f"{r['next_p99_ms']:.0f} | {r['submit_p50_ms']:.0f} / {r['submit_p95_ms']:.0f} / "
                  f"{r['submit_p99_ms']:.0f} | {r['streams_finished']} |")
        idle, busy = rows["idle"], rows[f"{args.streams} streams"]
        print(f"p99 with streams / idle: next {busy['next_p99_ms'] / idle['next_p99_ms']:.2f}x, "
              f"submit {busy['submit_p99_ms'] / idle['submit_p99_ms']:.2f}x")
    finally:
        stop.set()
        stop_all(procs, scratch)


if __name__ == "__main__":
    main()
