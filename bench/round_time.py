"""Time one full round of the loop on this machine, split by stage.

Starts the service (embedded default: SQLite + filesystem broker, one worker) in a scratch data
folder with the bundled SmolLM2-135M-Instruct, then through the HTTP API: imports P prompts,
starts a self-running round (N responses per prompt), simulated annotators rank every task
(they prefer the shorter response: a preference the reward model can learn), and the round trains
the reward model, runs PPO, evaluates and promotes. Prints the wall time of each stage.

    .venv/bin/python bench/round_time.py                      # 32 prompts x 4 responses
    .venv/bin/python bench/round_time.py --prompts 8 --responses 2 --ppo-iterations 2   # quick
    .venv/bin/python bench/round_time.py --engine transformers --generate-only   # the generate stage, before
    .venv/bin/python bench/round_time.py --engine vllm --generate-only           # ... and on the engine

--engine sets RLHF_SERVING_ENGINE for the service; with vllm the round starts once the promoted
policy's engine is ready (its start-up is printed apart), so the generate stage is the sampling.
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

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = ["Why is the sky blue?", "Name a fruit that is yellow.", "What is the capital of France?",
             "Give a tip for sleeping well.", "What does a bee make?", "How many legs does a spider have?",
             "Suggest a name for a cat.", "What is 12 plus 30?"]


def call(base: str, method: str, path: str, body=None, token: str | None = None, ctype="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", ctype)
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError):  # not up yet, or restarting
        return 0, None


def wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--responses", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--ppo-iterations", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--model", default=str(REPO / "data/artifacts/base/SmolLM2-135M-Instruct"))
    parser.add_argument("--engine", choices=("auto", "vllm", "transformers"), default="auto",
                        help="RLHF_SERVING_ENGINE of the service (what generates the round)")
    parser.add_argument("--generate-only", action="store_true", help="stop after the generate stage")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model directory; run `make run` once (it converts the bundled model)")

    scratch = Path(tempfile.mkdtemp(prefix="rlhf-round-bench-"))
    env = {**os.environ, "RLHF_DATA_DIR": str(scratch), "RLHF_ADMIN_PASSWORD": "bench-admin-pass",
           "DATABASE_URL": f"sqlite:///{scratch}/db.sqlite3", "CELERY_BROKER_URL": "filesystem://",
           "RLHF_BIND": f"127.0.0.1:{args.port}", "RLHF_LOG_LEVEL": "WARNING", "RLHF_SERVING_ENGINE": args.engine}
    py = sys.executable
    subprocess.run([py, "manage.py", "bootstrap", "--skip-model"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([py, "manage.py", "import_model", args.model, "--name", "SmolLM2-135M-Instruct"], cwd=REPO,
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([py, "manage.py", "run_service", "--bind", f"127.0.0.1:{args.port}"], cwd=REPO,
                              env=env, stdout=open(scratch / "service.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_for(lambda: call(base, "GET", "/healthz")[0] == 200, 120, "the service")
        _, tok = call(base, "POST", "/api/auth/token", {"username": "admin", "password": "bench-admin-pass"})
        admin = tok["token"]
        _, project = call(base, "POST", "/api/projects", {"name": "Round bench", "slug": "round-bench",
                                                          "responses_per_task": args.responses}, admin)
        lines = "\n".join(json.dumps({"prompt": f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})"})
                          for i in range(args.prompts)).encode()
        status, _ = call(base, "POST", f"/api/projects/{project['id']}/import", lines, admin, "application/x-ndjson")
        assert status in (200, 201), status
        _, models = call(base, "GET", "/api/models?kind=policy", token=admin)
        base_policy = [m for m in models if m["name"] == "SmolLM2-135M-Instruct"][0]
        call(base, "POST", f"/api/models/{base_policy['id']}/promote", {"project": project["id"]}, admin)
        call(base, "POST", "/api/users", {"username": "sim-annotator", "password": "sim-annotator-1",
                                          "role": "annotator"}, admin)
        _, ann = call(base, "POST", "/api/auth/token", {"username": "sim-annotator", "password": "sim-annotator-1"})
        engine = call(base, "GET", "/healthz")[1]["checks"]["engine"]
        if engine["engine"] == "vllm":
            e0 = time.monotonic()
            wait_for(lambda: any(e["state"] == "ready" and e["model_version"] == base_policy["id"]
                                 for e in call(base, "GET", "/healthz")[1]["checks"]["engine"].get("engines", [])),
                     1200, "the policy's vLLM engine")
            print(f"engine: vLLM ready {time.monotonic() - e0:.1f} s after the promotion")
        else:
            print(f"engine: {engine['engine']} ({engine['why']})")
        auto = {"enabled": True, "algorithm": "ppo", "eval_prompts": 8,
                "reward_model": {"batch_size": 8, "epochs": 1, "eval_fraction": 0.1, "max_length": 256},
                "policy": {"iterations": args.ppo_iterations, "rollout_batch_size": 8, "mini_batch_size": 4,
                           "ppo_epochs": 2, "max_length": 256,
                           "sampling": {"strategy": "top_p", "top_p": 1.0, "max_new_tokens": 32}}}
        t0 = time.monotonic()
        _, started = call(base, "POST", f"/api/projects/{project['id']}/rounds", {
            "prompts": "unused", "responses_per_prompt": args.responses, "auto": auto,
            "sampling": {"strategy": "top_p", "top_p": 0.95, "temperature": 0.9,
                         "max_new_tokens": args.max_new_tokens, "seed": 1}}, admin)
        round_id, gen_id = started["round"]["id"], started["job"]["id"]
        wait_for(lambda: call(base, "GET", f"/api/jobs/{gen_id}", token=admin)[1]["state"] in
                 ("succeeded", "failed"), 3600, "generation")
        t_gen = time.monotonic()
        if args.generate_only:
            _, job = call(base, "GET", f"/api/jobs/{gen_id}", token=admin)
            print(f"generate: {args.prompts} prompts x {args.responses} responses x up to {args.max_new_tokens} "
                  f"tokens, {job['state']}, {t_gen - t0:.1f} s (job wall time, engine {engine['engine']})")
            if job["state"] != "succeeded":
                print(f"error: {job.get('error')}\nlogs: {json.dumps(call(base, 'GET', f'/api/jobs/{gen_id}/logs', token=admin)[1])[-3000:]}")
            return
        ranked, latencies = 0, []
        while True:
            s0 = time.monotonic()
            status, body = call(base, "POST", f"/api/projects/{project['id']}/tasks/next", token=ann["token"])
            if status == 204:
                break
            responses = sorted(body["task"]["responses"], key=lambda r: (len(r["text"]), r["id"]))
            status, _ = call(base, "POST", f"/api/tasks/{body['task']['id']}/rankings",
                             {"lease": body["lease"]["id"], "ranking": [[r["id"]] for r in responses]},
                             ann["token"])
            latencies.append(time.monotonic() - s0)
            assert status == 201, status
            ranked += 1
        t_rank = time.monotonic()

        def round_done():
            _, rounds = call(base, "GET", f"/api/projects/{project['id']}/rounds", token=admin)
            current = [r for r in rounds if r["id"] == round_id][0]
            return current if current["status"] in ("closed", "failed") else None

        final = wait_for(round_done, 7200, "the round")
        t_end = time.monotonic()
        _, jobs = call(base, "GET", f"/api/jobs?project={project['id']}", token=admin)
        print(f"round: {args.prompts} prompts x {args.responses} responses, SmolLM2-135M, status {final['status']}")
        print(f"{'stage':<28}{'seconds':>10}")
        print(f"{'generate (job)':<28}{t_gen - t0:>10.1f}")
        print(f"{'annotate (' + str(ranked) + ' tasks via API)':<28}{t_rank - t_gen:>10.1f}")
        for job in sorted(jobs, key=lambda j: j["id"]):
            if job["kind"] == "generate" or not job["started_at"]:
                continue
            from datetime import datetime

            took = (datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00"))
                    - datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))).total_seconds()
            print(f"{job['kind'] + ' (job)':<28}{took:>10.1f}")
        print(f"{'train+eval+promote (wall)':<28}{t_end - t_rank:>10.1f}")
        print(f"{'whole round':<28}{t_end - t0:>10.1f}")
        print(f"evaluation: {json.dumps(final['settings']['auto'].get('evaluation'))}")
        latencies.sort()
        print(f"annotation cycle (next+submit) p50 {latencies[len(latencies) // 2] * 1000:.1f} ms")
    except BaseException:
        print("--- service log (tail) ---\n" + (scratch / "service.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
