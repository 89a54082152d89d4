"""The model API side by side in one run: our /v1 forwarding to its managed vLLM, that vLLM server
called directly (the same process, same checkpoint), and our /v1 on the transformers fallback;
C concurrent clients, streaming and not: tokens/s, TTFT p50/p95, request p50.

Starts everything itself in a scratch data folder (SQLite): the model becomes project "demo"'s
promoted policy, one gunicorn serves /v1 with RLHF_SERVING_ENGINE=vllm beside `manage.py
run_engines` (which starts the engine), a second gunicorn serves /v1 with the fallback.

    .venv/bin/python bench/model_api.py                                     # bundled SmolLM2-135M, bf16
    .venv/bin/python bench/model_api.py --clients 1,8 --fallback-clients 1 --requests 2 --max-tokens 32

The measuring is bench/engine_raw.py's: sampled chat completions (temperature 0.7, top-p 0.9, no
seed), targets taking turns on each measure so the machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_raw  # noqa: E402 - bench/ is not a package

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "data/artifacts/base/SmolLM2-135M-Instruct"

SETUP = """
from annotate.models import Project
from registry.models import ModelVersion
from serving.keys import api_key_create
project, _ = Project.objects.get_or_create(slug="demo", defaults={"name": "Demo"})
version = ModelVersion.objects.create(name="bench", kind="policy", path=PATH, source="bench", project=project,
                                      promoted=True)
print("KEY=" + api_key_create(name="bench")[1] + " VERSION=" + str(version.pk))
"""


def healthz(url: str) -> dict:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 while a part is missing (no worker here): still JSON
        return json.loads(exc.read())
    except (OSError, ValueError):
        return {}


def wait_for(fn, timeout: float, what: str, procs: list[subprocess.Popen], logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise SystemExit(f"{what}: a process exited; its log:\n{log.read_text(errors='replace')[-3000:]}")
        value = fn()
        if value:
            return value
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="bfloat16", help="the engine's dtype (RLHF_SERVING_ENGINE_DTYPE)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--fallback-clients", default="1,8", help="client counts the fallback is measured at "
                        "(it takes minutes at 32)")
    parser.add_argument("--modes", default="stream,plain")
    parser.add_argument("--requests", type=int, default=3, help="requests per client per measure")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=48, help="gunicorn threads (one per open stream)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    args.extra, args.timeout = {}, 900
    if not (args.model_dir / "config.json").is_file():
        raise SystemExit(f"{args.model_dir} is not a model directory; run `make run` once (it converts the bundled model)")

    scratch = Path(tempfile.mkdtemp(prefix="rlhf-model-api-bench-"))
    env, manage, out = scratch_service(scratch, args.model_dir, PYTHONUNBUFFERED="1",
                                       RLHF_SERVING_ENGINE_DTYPE=args.dtype, RLHF_LOG_LEVEL="WARNING")
    line = next(x for x in out.splitlines() if x.startswith("KEY="))
    key, version = line.split()[0][4:], int(line.split()[1][8:])
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    procs, logs = [], []

    def start(name: str, cmd: list[str], engine: str) -> None:
        logs.append(scratch / f"{name}.log")
        procs.append(subprocess.Popen(cmd, env={**env, "RLHF_SERVING_ENGINE": engine}, cwd=REPO,
                                      stdout=open(logs[-1], "wb"), stderr=subprocess.STDOUT, start_new_session=True))

    ports = [engine_raw_free_port(), engine_raw_free_port()]
    web = [gunicorn, "config.wsgi", "--workers", "1", "--threads", str(args.threads), "--timeout", "900",
           "--log-level", "warning"]
    try:
        started = time.monotonic()
        start("engines", [*manage, "run_engines"], "vllm")
        start("web-vllm", [*web, "--bind", f"127.0.0.1:{ports[0]}"], "vllm")
        start("web-fallback", [*web, "--bind", f"127.0.0.1:{ports[1]}"], "transformers")
        ours, fallback = (f"http://127.0.0.1:{p}" for p in ports)

        def engine_url():
            engines = healthz(ours).get("checks", {}).get("engine", {}).get("engines", [])
            return next((e["url"] for e in engines if e["state"] == "ready" and e["model_version"] == version), None)

        raw = wait_for(engine_url, 1200, "the vLLM engine", procs, logs)
        print(f"vLLM ready {time.monotonic() - started:.0f} s after start ({args.dtype}); raw server {raw}", flush=True)
        wait_for(lambda: healthz(fallback), 120, "the fallback web process", procs, logs)
        targets = {"ours /v1 -> vLLM": engine_raw.Target("ours /v1 -> vLLM", f"{ours}/v1", "latest", key),
                   "raw vLLM": engine_raw.Target("raw vLLM", f"{raw}/v1", f"mv-{version}"),
                   "ours /v1 fallback": engine_raw.Target("ours /v1 fallback", f"{fallback}/v1", "latest", key)}
        for target in targets.values():  # warm-up: the fallback loads its model on its first request
            m = engine_raw.run_measure(target, 1, 2, False, args)
            if m.errors:
                raise SystemExit(f"{target.label}: warm-up failed: {m.first_error}")
        fallback_clients = {int(c) for c in args.fallback_clients.split(",") if c}
        rows = []
        for clients in (int(c) for c in args.clients.split(",")):
            for mode in args.modes.split(","):
                for target in targets.values():
                    if target.label == "ours /v1 fallback" and clients not in fallback_clients:
                        continue
                    m = engine_raw.run_measure(target, clients, args.requests, mode == "stream", args)
                    rows.append({"target": target.label, "mode": mode, "clients": clients,
                                 "tokens_per_s": round(m.tokens / m.seconds, 1),
                                 "ttft_p50": engine_raw.pct(m.ttft, 0.5), "ttft_p95": engine_raw.pct(m.ttft, 0.95),
                                 "latency_p50": engine_raw.pct(m.latency, 0.5), "errors": m.errors,
                                 "requests": len(m.latency), "first_error": m.first_error})
                    r = rows[-1]
                    print(f"{r['target']:<20}{mode:<8}C={clients:<4}{r['tokens_per_s']:>8.1f} tok/s  TTFT p50 "
                          f"{r['ttft_p50']:.3f} p95 {r['ttft_p95']:.3f}  req p50 {r['latency_p50']:.2f} s  "
                          f"{r['errors']} err", flush=True)
        print(f"\n{args.model_dir.name} {args.dtype} (fallback: fp32 in-process), chat completions up to "
              f"{args.max_tokens} tokens, temperature {args.temperature}, top_p {args.top_p}, {args.requests} "
              f"requests per client, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}")
        print(f"{'target':<20}{'mode':<8}{'C':>4}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'req p50':>9}{'err':>5}")
        for r in rows:
            print(f"{r['target']:<20}{r['mode']:<8}{r['clients']:>4}{r['tokens_per_s']:>9.1f}{r['ttft_p50']:>10.3f}"
                  f"{r['ttft_p95']:>10.3f}{r['latency_p50']:>9.2f}{r['errors']:>5}")
        for clients in sorted({r["clients"] for r in rows}):
            pick = {(r["target"], r["mode"]): r for r in rows if r["clients"] == clients}
            a, b = pick.get(("ours /v1 -> vLLM", "stream")), pick.get(("raw vLLM", "stream"))
            if a and b:
                print(f"C={clients} streaming: ours/raw tokens/s {a['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
                      f"TTFT p50 {a['ttft_p50'] / b['ttft_p50']:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    finally:
        stop_all(procs, scratch)


def scratch_service(scratch: Path, model_dir: Path, **extra_env: str) -> tuple[dict, list[str], str]:
    """A scratch service on SQLite serving `model_dir`: its environment, the manage.py command, and
    what SETUP printed (the key)."""
    env = {**os.environ, "RLHF_DATA_DIR": str(scratch), "RLHF_ARTIFACTS_ROOT": str(model_dir.parent),
           "DATABASE_URL": f"sqlite:///{scratch / 'db.sqlite3'}", "CELERY_BROKER_URL": "filesystem://",
           "RLHF_API_RATE_LIMIT": "0", **extra_env}
    env.pop("CACHE_URL", None)
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, cwd=REPO, check=True)
    out = subprocess.run([*manage, "shell", "-c", SETUP.replace("PATH", repr(model_dir.name))], env=env,
                         cwd=REPO, check=True, capture_output=True, text=True).stdout
    return env, manage, out


def stop_all(procs: list[subprocess.Popen], scratch: Path) -> None:
    """Stop the processes a bench started (terminate, then kill after a minute) and drop its scratch folder."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(scratch, ignore_errors=True)


def engine_raw_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
