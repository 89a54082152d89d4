"""Load test of the annotation API: C concurrent annotators doing next -> submit for T seconds.

It creates (through the API) a project with M tasks and A annotators, runs the load, prints
cycles/s and p50/p95/p99 per endpoint, then checks from the `rankings` export that no task has
more than k rankings and no annotator ranked a task twice.

    # against a server you run:
    python bench/annotation_load.py --url http://127.0.0.1:8000 --admin admin:password -M 2000 -C 8
    # or let it migrate DATABASE_URL, create an admin and start gunicorn (4 workers x 4 threads):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rlhf_bench python bench/annotation_load.py --serve -M 2000 -C 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent


class Client:
    """One keep-alive HTTP connection (one per annotator thread, like one browser)."""

    def __init__(self, url: str, token: str | None = None):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(self, method: str, path: str, body=None, content_type="application/json") -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if body is not None:
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (TimeoutError, http.client.HTTPException, ConnectionError):
                self.conn.close()  # the server closed a kept-alive connection: reconnect once
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body=None, expect=(200, 201), **kw):
        status, data = self.request(method, path, body, **kw)
        if status not in expect:
            raise RuntimeError(f"{method} {path} -> {status}: {data[:500]!r}")
        return json.loads(data) if data else None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def setup_project(admin: Client, m: int, k: int, n_responses: int, chunk: int) -> int:
    run = secrets.token_hex(3)
    project = admin.json("POST", "/api/projects", {"name": f"bench {run} M={m}", "slug": f"bench-{run}",
                                                   "responses_per_task": n_responses, "rankings_per_task": k})
    started = time.perf_counter()
    for start in range(0, m, chunk):
        lines = b"".join(json.dumps({
            "prompt": f"[{run}] question {i}: explain item {i} in one paragraph.",
            "responses": [f"answer {j} to question {i}: " + "lorem ipsum " * 20 for j in range(n_responses)],
        }).encode() + b"\n" for i in range(start, min(m, start + chunk)))
        admin.json("POST", f"/api/projects/{project['id']}/import", lines, content_type="application/x-ndjson")
    print(f"project {project['id']}: imported {m} tasks in {time.perf_counter() - started:.1f} s", flush=True)
    return project["id"]


def make_annotators(admin: Client, url: str, n: int) -> list[str]:
    run = secrets.token_hex(3)
    tokens = []
    for i in range(n):
        name, password = f"bench-{run}-{i}", secrets.token_urlsafe(12)
        admin.json("POST", "/api/users", {"username": name, "password": password, "role": "annotator"})
        tokens.append(Client(url).json("POST", "/api/auth/token", {"username": name, "password": password})["token"])
    return tokens


def run_load(url: str, project_id: int, tokens: list[str], concurrency: int, seconds: float,
             rate: float | None = None) -> dict:
    """Closed loop (each annotator starts the next cycle as soon as one ends), or with `rate`
    the annotators together start `rate` cycles per second, each on its own schedule, which is
    how latency at a given load is measured rather than at saturation."""
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: Counter = Counter()
    cycles = [0] * concurrency
    stop_at = time.perf_counter() + seconds
    barrier = threading.Barrier(concurrency)
    lock = threading.Lock()

    def annotator(i: int) -> None:
        client = Client(url, tokens[i % len(tokens)])
        rng = random.Random(i)
        mine: dict[str, list[float]] = defaultdict(list)
        seen: Counter = Counter()
        barrier.wait()
        interval = concurrency / rate if rate else 0.0
        due = time.perf_counter() + i * interval / concurrency
        while time.perf_counter() < stop_at:
            if interval:
                time.sleep(max(0.0, due - time.perf_counter()))
                due += interval
            t0 = time.perf_counter()
            status, body = client.request("POST", f"/api/projects/{project_id}/tasks/next", b"")
            mine["next"].append(time.perf_counter() - t0)
            seen[f"next {status}"] += 1
            if status != 200:
                if status == 204:
                    break
                continue
            data = json.loads(body)
            ids = [r["id"] for r in data["task"]["responses"]]
            rng.shuffle(ids)
            payload = {"lease": data["lease"]["id"], "ranking": [[x] for x in ids], "time_spent_ms": 1000}
            t0 = time.perf_counter()
            status, _ = client.request("POST", f"/api/tasks/{data['task']['id']}/rankings", payload)
            mine["submit"].append(time.perf_counter() - t0)
            seen[f"submit {status}"] += 1
            if status == 201:
                cycles[i] += 1
        with lock:
            for key, values in mine.items():
                latencies[key].extend(values)
            statuses.update(seen)

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"cycles": sum(cycles), "seconds": elapsed, "latencies": latencies, "statuses": dict(statuses)}


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each process that serves the load on this machine: gunicorn
    ("web") and PostgreSQL backends ("db"), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = "web" if b"gunicorn" in cmdline else "db" if cmdline.startswith(b"postgres") else None
        if kind:
            used[int(pid)] = (kind, (int(fields[11]) + int(fields[12])) / tick)  # utime + stime
    return used


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per kind between two readings (a process that exited in between is missed).
    Divided by the cycles done it gives the cost of a cycle, which a noisy shared machine
    disturbs far less than it disturbs throughput."""
    used = {"web": 0.0, "db": 0.0}
    for pid, (kind, seconds) in after.items():
        used[kind] += seconds - before.get(pid, (kind, 0.0))[1]
    return used


def check_export(admin: Client, project_id: int, k: int) -> dict:
    status, body = admin.request("GET", f"/api/projects/{project_id}/export?format=rankings")
    assert status == 200, (status, body[:300])
    per_task: Counter = Counter()
    per_pair: Counter = Counter()
    for line in body.splitlines():
        row = json.loads(line)
        per_task[row["task"]] += 1
        per_pair[(row["task"], row["annotator"])] += 1
    return {"rankings": sum(per_task.values()), "over_collected": sum(1 for n in per_task.values() if n > k),
            "duplicates": sum(1 for n in per_pair.values() if n > 1)}


def serve(port: int, workers: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_DEBUG": "0"}
    log = open(REPO / "data" / f"bench-gunicorn-{port}.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi", "-b", f"127.0.0.1:{port}", "-w",
         str(workers), "--threads", str(threads), "--timeout", "300", "--keep-alive", "30"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("gunicorn did not start; see data/bench-gunicorn-*.log")


def ensure_admin(username: str, password: str) -> None:
    code = ("from django.contrib.auth import get_user_model as g; U=g(); "
            f"u=U.objects.filter(username={username!r}).first() or U(username={username!r}); "
            f"u.is_superuser=u.is_staff=True; u.set_password({password!r}); u.save()")
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server (default: the one --serve starts)")
    parser.add_argument("--admin", default="bench-admin:bench-admin-password", help="admin user:password")
    parser.add_argument("--serve", action="store_true", help="migrate DATABASE_URL and start gunicorn for the run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("-M", "--tasks", type=int, default=2000)
    parser.add_argument("-A", "--annotators", type=int, default=None, help="default: C")
    parser.add_argument("-C", "--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("-T", "--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=None,
                        help="cycles/s the annotators start together (default: each as fast as it can)")
    parser.add_argument("-k", type=int, default=3, help="rankings per task")
    parser.add_argument("--responses", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=10000, help="import lines per request")
    parser.add_argument("--project", type=int, default=None, help="reuse this project instead of importing")
    args = parser.parse_args()

    username, password = args.admin.split(":", 1)
    proc = None
    if args.serve:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, check=True)
        ensure_admin(username, password)
        proc = serve(args.port, args.workers, args.threads)
    url = args.url or f"http://127.0.0.1:{args.port}"
    try:
        admin = Client(url, Client(url).json("POST", "/api/auth/token", {"username": username, "password": password})["token"])
        project_id = args.project or setup_project(admin, args.tasks, args.k, args.responses, args.chunk)
        db = os.environ.get("DATABASE_URL", "sqlite (default)").split(":", 1)[0]
        rows = []
        for c in args.concurrency:
            tokens = make_annotators(admin, url, max(c, args.annotators or c))
            cpu_before = cpu_seconds()
            result = run_load(url, project_id, tokens, c, args.seconds, args.rate)
            cpu = cpu_used(cpu_before, cpu_seconds())
            cycles = max(1, result["cycles"])
            check = check_export(admin, project_id, args.k)
            lat = result["latencies"]
            row = {"db": db, "M": args.tasks, "C": f"{c} at {args.rate:g}/s" if args.rate else c,
                   "cycles_per_s": result["cycles"] / result["seconds"],
                   **{f"{ep}_p{q}_ms": pct(lat[ep], q) * 1000 for ep in ("next", "submit") for q in (50, 95, 99)},
                   # ms of CPU per next+submit cycle (0 where that process is not on this machine)
                   **{f"{k}_cpu_ms_per_cycle": seconds * 1000 / cycles for k, seconds in cpu.items()},
                   "statuses": result["statuses"], **check}
            rows.append(row)
            print(json.dumps(row), flush=True)
        print("\n| DB | M | C | cycles/s | next p50/p95/p99 ms | submit p50/p95/p99 ms | CPU ms/cycle web+db "
              "| over-collected | dup |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['db']} | {r['M']:,} | {r['C']} | {r['cycles_per_s']:.0f} | "
                  f"{r['next_p50_ms']:.0f} / {r['next_p95_ms']:.0f} / {r['next_p99_ms']:.0f} | "
                  f"{r['submit_p50_ms']:.0f} / {r['submit_p95_ms']:.0f} / {r['submit_p99_ms']:.0f} | "
                  f"{r['web_cpu_ms_per_cycle']:.1f} + {r['db_cpu_ms_per_cycle']:.1f} | "
                  f"{r['over_collected']} | {r['duplicates']} |")
        if any(r["over_collected"] or r["duplicates"] for r in rows):
            raise SystemExit("FAILED: a task has more than k rankings or an annotator ranked a task twice")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
