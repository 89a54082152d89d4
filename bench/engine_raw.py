"""Throughput and latency of any OpenAI-compatible chat endpoint (raw vLLM, our /v1, ...), several
side by side in one run: C concurrent clients, streaming and not, sampled chat completions.

    python bench/engine_raw.py --target http://127.0.0.1:8711 smol
    python bench/engine_raw.py --target http://127.0.0.1:8711 smol --target http://127.0.0.1:8000/v1 latest rlhf-KEY \
        --clients 1,8,32 --requests 3 --max-tokens 64

A target is URL MODEL [KEY]; the URL may end in /v1 or not. Stdlib only, so it runs from any venv.
Targets take turns on each measure (same client count and mode), so a change in the machine's load
between measures hits them alike. tokens/s counts the completion tokens each server reports
(`usage`; streams ask for it with stream_options.include_usage) over the wall time of the measure.
TTFT is the time from sending a streamed request to its first chunk with non-empty content.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

QUESTIONS = ["Why is the sky blue?", "Name a fruit that is yellow.", "What is the capital of France?",
             "Give a tip for sleeping well.", "What does a bee make?", "How many legs does a spider have?",
             "Suggest a name for a cat.", "What is 12 plus 30?", "Describe rain in one sentence.",
             "Why do we sleep?", "What is a reward model?", "Tell me a fact about the moon."]


@dataclass
class Target:
    label: str
    url: str  # ends in /v1
    model: str
    key: str | None = None


@dataclass
class Measure:
    tokens: int = 0
    seconds: float = 0.0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    first_error: str = ""


def parse_target(values: list[str], index: int) -> Target:
    if len(values) not in (2, 3):
        raise SystemExit(f"--target takes URL MODEL [KEY], got {values}")
    url = values[0].rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    return Target(label=f"{index}:{url.split('//')[-1].removesuffix('/v1')}", url=url, model=values[1],
                  key=values[2] if len(values) == 3 else None)


def request(target: Target, body: dict) -> urllib.request.Request:
    req = urllib.request.Request(f"{target.url}/chat/completions", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if target.key:
        req.add_header("Authorization", f"Bearer {target.key}")
    return req


def one_call(target: Target, body: dict, timeout: float) -> tuple[int, float | None, float]:
    """(completion tokens, TTFT or None, seconds) of one request."""
    start = time.perf_counter()
    with urllib.request.urlopen(request(target, body), timeout=timeout) as resp:
        if not body.get("stream"):
            tokens = json.loads(resp.read())["usage"]["completion_tokens"]
            return tokens, None, time.perf_counter() - start
        first, tokens, chunks = None, None, 0
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - start
        # A server that ignores include_usage: one content chunk per token is the best guess left.
        return (chunks if tokens is None else tokens), first, time.perf_counter() - start


def run_measure(target: Target, clients: int, requests: int, stream: bool, args) -> Measure:
    out = Measure()
    lock = threading.Lock()

    def client(i: int) -> None:
        for r in range(requests):
            body = {"model": target.model, "max_tokens": args.max_tokens, "temperature": args.temperature,
                    "top_p": args.top_p,
                    "messages": [{"role": "user", "content": QUESTIONS[(i * requests + r) % len(QUESTIONS)]}],
                    **args.extra}
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            try:
                tokens, ttft, seconds = one_call(target, body, args.timeout)
            except Exception as exc:  # counted and shown; one failing request must not end the run
                with lock:
                    out.errors += 1
                    out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"
                continue
            with lock:
                out.tokens += tokens
                out.latency.append(seconds)
                if ttft is not None:
                    out.ttft.append(ttft)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    out.seconds = time.perf_counter() - start
    return out


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", nargs="+", required=True, metavar="URL MODEL [KEY]",
                        help="an OpenAI-compatible server; repeat for side-by-side runs")
    parser.add_argument("--clients", default="1,8,32", help="concurrent client counts, comma separated")
    parser.add_argument("--requests", type=int, default=3, help="requests per client per measure")
    parser.add_argument("--modes", default="stream,plain", help="stream, plain or both")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--extra", type=json.loads, default={}, help='JSON merged into each body, e.g. {"seed": 1}')
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    targets = [parse_target(values, i) for i, values in enumerate(args.target)]
    modes = [m.strip() for m in args.modes.split(",")]
    clients_list = [int(c) for c in args.clients.split(",")]
    for target in targets:  # warm-up: first requests pay for lazy init and caches
        m = run_measure(target, 1, 2, False, args)
        if m.errors:
            raise SystemExit(f"{target.label}: warm-up failed: {m.first_error}")

    rows = []
    for clients in clients_list:
        for mode in modes:
            for target in targets:
                m = run_measure(target, clients, args.requests, mode == "stream", args)
                rows.append({"target": target.label, "model": target.model, "mode": mode, "clients": clients,
                             "requests": len(m.latency), "errors": m.errors, "tokens": m.tokens,
                             "seconds": round(m.seconds, 3), "tokens_per_s": round(m.tokens / m.seconds, 1),
                             "ttft_p50": pct(m.ttft, 0.5), "ttft_p95": pct(m.ttft, 0.95),
                             "latency_p50": pct(m.latency, 0.5), "first_error": m.first_error})
                r = rows[-1]
                print(f"{r['target']:<26}{mode:<8}C={clients:<4}{r['tokens_per_s']:>8.1f} tok/s  "
                      f"TTFT p50 {r['ttft_p50']:.3f} p95 {r['ttft_p95']:.3f}  req p50 {r['latency_p50']:.2f} s  "
                      f"({r['tokens']} tok, {r['requests']} req, {r['errors']} err, {r['seconds']:.1f} s)"
                      + (f"  first error: {m.first_error[:120]}" if m.errors else ""), flush=True)

    print(f"\nchat completions, max_tokens {args.max_tokens}, temperature {args.temperature}, top_p {args.top_p}, "
          f"{args.requests} request(s) per client, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}")
    header = f"{'target':<26}{'mode':<8}{'C':>4}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'req p50':>9}{'err':>5}"
    print(header)
    for r in rows:
        print(f"{r['target']:<26}{r['mode']:<8}{r['clients']:>4}{r['tokens_per_s']:>9.1f}{r['ttft_p50']:>10.3f}"
              f"{r['ttft_p95']:>10.3f}{r['latency_p50']:>9.2f}{r['errors']:>5}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "target"},
                       "targets": [t.__dict__ | {"key": bool(t.key)} for t in targets], "rows": rows},
                      fh, indent=1)
    sys.exit(1 if any(r["errors"] for r in rows) else 0)


if __name__ == "__main__":
    main()
