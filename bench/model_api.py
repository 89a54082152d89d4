"""Speed of the model API: time to first token and tokens/s for 1 and N concurrent clients, each
against calling transformers' `generate` directly on the same model in the same run.

Without --url it starts the service itself (gunicorn, one process with many threads, so one model
copy serves every client and concurrent requests can batch) in a scratch data folder, registers the
model as the promoted policy of project "demo" and creates an API key.

    .venv/bin/python bench/model_api.py                              # bundled SmolLM2-135M, small settings
    .venv/bin/python bench/model_api.py --max-tokens 32 --requests 2 --clients 1,8
    .venv/bin/python bench/model_api.py --url http://host:8000 --key rlhf-... --model latest --skip-direct

Every request is greedy with a fixed max_tokens, so the server and generate() do the same work;
tokens/s counts the completion tokens each side reports, over the wall time of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "data/artifacts/base/SmolLM2-135M-Instruct"
QUESTIONS = ["Why is the sky blue?", "Name a fruit that is yellow.", "What is the capital of France?",
             "Give a tip for sleeping well.", "What does a bee make?", "How many legs does a spider have?",
             "Suggest a name for a cat.", "What is 12 plus 30?", "Describe rain in one sentence.",
             "Why do we sleep?", "What is a reward model?", "Tell me a fact about the moon."]

SETUP = """
from annotate.models import Project
from registry.models import ModelVersion
from serving.keys import api_key_create
project, _ = Project.objects.get_or_create(slug="demo", defaults={"name": "Demo"})
ModelVersion.objects.create(name="bench", kind="policy", path={path!r}, source="bench", project=project,
                            promoted=True)
print("KEY=" + api_key_create(name="bench")[1])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(model_dir: Path, scratch: Path, threads: int, torch_threads: int | None
                  ) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(torch_threads)} if torch_threads else {}), "RLHF_DATA_DIR": str(scratch), "RLHF_ARTIFACTS_ROOT": str(model_dir.parent),
           "DATABASE_URL": f"sqlite:///{scratch / 'db.sqlite3'}", "CELERY_BROKER_URL": "filesystem://",
           "RLHF_API_RATE_LIMIT": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("CACHE_URL", None)
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, cwd=REPO, check=True)
    out = subprocess.run([*manage, "shell", "-c", SETUP.replace("{path!r}", repr(model_dir.name))], env=env, cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    key = next(line[4:] for line in out.splitlines() if line.startswith("KEY="))
    port = free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    proc = subprocess.Popen([gunicorn, "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                             "--threads", str(threads), "--timeout", "600", "--log-level", "warning"],
                            env=env, cwd=REPO, stdout=open(scratch / "web.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{(scratch / 'web.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2)
            break
        except urllib.error.HTTPError:
            break  # answering; 503 only means no Celery worker, which this bench does not need
        except OSError:
            time.sleep(0.3)
    return proc, url, key


# ---- the server side --------------------------------------------------------------------------------


def post(url: str, key: str, body: dict) -> urllib.request.Request:
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    return request


def chat_body(model: str, question: str, max_tokens: int, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": max_tokens, **extra}


def server_ttft(url: str, key: str, model: str, questions: list[str], max_tokens: int) -> list[float]:
    """Seconds from sending a streamed request to its first content chunk."""
    times = []
    for question in questions:
        start = time.perf_counter()
        with urllib.request.urlopen(post(url, key, chat_body(model, question, max_tokens, stream=True)),
                                    timeout=600) as response:
            first = None
            for line in response:
                if first is None and line.startswith(b"data: {") and b'"content": "' in line \
                        and b'"content": ""' not in line:
                    first = time.perf_counter() - start
            times.append(first if first is not None else time.perf_counter() - start)
    return times


def server_throughput(url: str, key: str, model: str, clients: int, requests: int, max_tokens: int
                      ) -> tuple[float, int, float]:
    """(tokens/s, completion tokens, seconds) for `clients` threads each sending `requests` requests."""

    def client(i: int) -> int:
        tokens = 0
        for r in range(requests):
            question = QUESTIONS[(i * requests + r) % len(QUESTIONS)]
            with urllib.request.urlopen(post(url, key, chat_body(model, question, max_tokens)), timeout=600) as resp:
                tokens += json.loads(resp.read())["usage"]["completion_tokens"]
        return tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(client, range(clients)))
    seconds = time.perf_counter() - start
    return tokens / seconds, tokens, seconds


# ---- transformers' generate, directly -------------------------------------------------------------


class Direct:
    """transformers' generate on the same checkpoint in this process: the yardstick."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None or self.tokenizer.pad_token == self.tokenizer.eos_token:
            self.tokenizer.pad_token = "<|endoftext|>"
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        self.run(QUESTIONS[:1], 2)  # warm-up

    def run(self, batch: list[str], new_tokens: int) -> int:
        tok = self.tokenizer
        texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
                 for q in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with self.torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        eos = new == tok.eos_token_id
        # Generated tokens up to and including the first EOS, as the service counts them.
        after = (eos.long().cumsum(-1) - eos.long()) > 0
        return int((~after & (new != tok.pad_token_id)).sum())

    def ttft(self, question: str) -> float:
        start = time.perf_counter()
        self.run([question], 1)
        return time.perf_counter() - start

    def throughput(self, clients: int, requests: int, max_tokens: int) -> tuple[float, int, float]:
        """N clients' requests as rounds of one left-padded batch of N prompts."""
        start = time.perf_counter()
        tokens = 0
        for r in range(requests):
            tokens += self.run([QUESTIONS[(i * requests + r) % len(QUESTIONS)] for i in range(clients)], max_tokens)
        seconds = time.perf_counter() - start
        return tokens / seconds, tokens, seconds


def clients_list(spec) -> list[int]:
    return [int(c) for c in str(spec).split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--url", help="a running service; default: start one")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument("--model", default="latest", help="model name to request")
    parser.add_argument("--clients", default="1,8", help="concurrent client counts, comma separated")
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--ttft-requests", type=int, default=4)
    parser.add_argument("--threads", type=int, default=16, help="gunicorn threads of the started server")
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument("--torch-threads", type=int, help="intra-op threads on both sides (default: torch's "
                        "choice); 1 is much steadier on a CPU shared with other work")
    args = parser.parse_args()

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    proc = None
    scratch = tempfile.TemporaryDirectory(prefix="bench-model-api-")
    url, key = args.url, args.key
    server: dict = {"ttft": []}
    base: dict | None = None if args.skip_direct else {"ttft": []}
    # Server and generate() take turns on each measure, so a change in the machine's load between
    # measures hits both sides alike (the server idles while generate() runs, and the other way).
    try:
        if url is None:
            proc, url, key = start_service(args.model_dir.resolve(), Path(scratch.name), args.threads,
                                           args.torch_threads)
        direct = None if base is None else Direct(args.model_dir)
        server_throughput(url, key, args.model, 1, 1, 4)  # loads the model
        for question in QUESTIONS[:args.ttft_requests]:
            server["ttft"] += server_ttft(url, key, args.model, [question], args.max_tokens)
            if direct:
                base["ttft"].append(direct.ttft(question))
        for n in clients_list(args.clients):
            server[n] = server_throughput(url, key, args.model, n, args.requests, args.max_tokens)
            if direct:
                base[n] = direct.throughput(n, args.requests, args.max_tokens)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        scratch.cleanup()

    print(f"\nmodel {args.model_dir.name}, greedy, max_tokens {args.max_tokens}, {args.requests} request(s) "
          f"per client, torch threads {_threads()}")
    print(f"{'measure':<34}{'service':>12}{'generate()':>12}{'ratio':>8}")
    s_ttft = statistics.median(server["ttft"])
    line = f"{'time to first token, median (s)':<34}{s_ttft:>12.3f}"
    if base:
        d_ttft = statistics.median(base["ttft"])
        line += f"{d_ttft:>12.3f}{s_ttft / d_ttft:>8.2f}"
    print(line)
    for n in clients_list(args.clients):
        rate, tokens, seconds = server[n]
        line = f"{f'tokens/s, {n} client(s)':<34}{rate:>12.1f}"
        if base:
            d_rate = base[n][0]
            line += f"{d_rate:>12.1f}{rate / d_rate:>8.2f}"
        print(line + f"   ({tokens} tokens in {seconds:.1f} s)")
    if base:
        print("generate() for N clients = one left-padded batch of N prompts per round")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
