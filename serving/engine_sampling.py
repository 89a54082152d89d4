"""Sampling through the inference engine for the round generator: rlhf.sampling's settings mapped
exactly onto vLLM's, our own prompt token ids sent as they are, the answers turned into the same
Generation records the in-process sampler returns.

The mapping (one meaning per setting; tests/engine/test_sampling_agreement.py checks it):
  greedy       -> temperature 0 (argmax; vLLM allows n = 1 only, so one answer is repeated n times,
                  as our greedy decode would produce n identical ones)
  multinomial  -> temperature T, top_k 0 (off), top_p 1, min_p 0
  top_k        -> temperature T, top_k k, top_p 1
  top_p        -> temperature T, top_p p, top_k 0
  always       -> max_tokens = max_new_tokens, stop strings, no repetition/presence/frequency
                  penalty, EOS honoured, special tokens skipped in the text.
Seeds: vLLM draws each request from its own generator seeded with the request's seed, and the
j-th of its n samples with seed + j. Prompt i of a job gets seed + i * n, so response j of prompt
i is drawn with seed + i * n + j whatever the batching, and a resumed job samples the same. Our
in-process sampler draws a whole batch from one generator instead: the same seed gives a
repeatable round on each engine, not the same text on both.
"""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

from .engines import EngineRoute

REQUEST_TIMEOUT_S = 600
CANCEL_POLL_S = 0.25


class EngineCancelled(Exception):
    """should_stop() answered True: the engine's requests were hung up (vLLM aborts them)."""


class EngineRequestError(RuntimeError):
    """The engine refused a request or went away."""


def vllm_sampling(config: Any, n: int) -> dict:
    """The body fields of a vLLM completion request that mean what `config` (SamplingConfig) means."""
    body: dict = {"max_tokens": config.max_new_tokens, "n": n, "stop": list(config.stop) or None,
                  "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_p": 0.0,
                  "ignore_eos": False, "skip_special_tokens": True, "return_token_ids": True}
    if config.strategy == "greedy":
        return {**body, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "n": 1}
    body.update(temperature=config.temperature, top_p=1.0, top_k=0)
    if config.strategy == "top_k":
        body["top_k"] = config.top_k
    elif config.strategy == "top_p":
        body["top_p"] = config.top_p
    return body


class _Call:
    """One POST to the engine that another thread can hang up."""

    def __init__(self, route: EngineRoute, body: dict):
        self.route, self.body = route, body
        self.conn: http.client.HTTPConnection | None = None
        self.response: http.client.HTTPResponse | None = None
        self.lock = threading.Lock()
        self.hung_up = False

    def run(self) -> dict:
        url = urlsplit(self.route.openai_url)
        with self.lock:
            if self.hung_up:
                raise EngineCancelled()
            self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=REQUEST_TIMEOUT_S)
        payload = json.dumps({**self.body, "model": self.route.upstream_model})
        try:
            self.conn.request("POST", f"{url.path.rstrip('/')}/completions", payload,
                              {"Content-Type": "application/json"})
            self.response = self.conn.getresponse()
            raw = self.response.read()
        except (OSError, http.client.HTTPException) as exc:
            if self.hung_up:
                raise EngineCancelled() from None
            raise EngineRequestError(f"the engine at {self.route.openai_url} went away: {exc}") from None
        finally:
            self.conn.close()
        if self.response.status != 200:
            raise EngineRequestError(f"the engine at {self.route.openai_url} answered HTTP {self.response.status}: "
                                     f"{raw[:500].decode(errors='replace')}")
        return json.loads(raw)

    def hang_up(self) -> None:
        with self.lock:
            self.hung_up = True
            # shutdown() first: it wakes the thread blocked reading the answer (close() alone does
            # not), and the connection forgets its socket once closed.
            sock = self.conn.sock if self.conn is not None else None
            if sock is not None:
                try:
                    sock.shutdown(2)
                except OSError:
                    pass
            for closable in (self.response, self.conn):
                if closable is not None:
                    try:
                        closable.close()
                    except OSError:
                        pass


def engine_generate(route: EngineRoute, prompt_ids: list[list[int]], config: Any, n: int, *,
                    positions: list[int] | None = None, should_stop=None) -> list[list[Any]]:
    """n Generations per prompt (token ids from rlhf.tokenization.encode_prompt), all prompts sent
    at once so the engine batches them. positions: each prompt's place in the whole job (it places
    the seeds; default 0, 1, ...). should_stop is asked every 0.25 s; True hangs every request up
    and raises EngineCancelled."""
    from rlhf.sampling import Generation

    config.validate()
    base = vllm_sampling(config, n)
    copies = n if config.strategy == "greedy" else 1
    calls = []
    positions = list(range(len(prompt_ids))) if positions is None else positions
    for position, ids in zip(positions, prompt_ids, strict=True):
        body = {**base, "prompt": ids}
        if config.seed is not None:
            body["seed"] = config.seed + position * n
        calls.append(_Call(route, body))
    pool = ThreadPoolExecutor(max_workers=max(1, len(calls)), thread_name_prefix="engine-sample")
    try:
        futures = [pool.submit(call.run) for call in calls]
        while True:
            done, pending = wait(futures, timeout=CANCEL_POLL_S, return_when=FIRST_EXCEPTION)
            if should_stop is not None and should_stop():
                raise EngineCancelled()
            failed = [f for f in done if f.exception() is not None]
            if failed:
                raise failed[0].exception()
            if not pending:
                break
    except BaseException:
        for call in calls:
            call.hang_up()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # hung-up threads end on their own
    out = []
    for ids, future in zip(prompt_ids, futures, strict=True):
        choices = sorted(future.result()["choices"], key=lambda c: c["index"])
        gens = [Generation(text=c["text"], token_ids=list(c.get("token_ids") or []),
                           finish_reason=c.get("finish_reason") or "length", prompt_tokens=len(ids),
                           completion_tokens=len(c.get("token_ids") or []))
                for c in choices]
        out.append([g for g in gens for _ in range(copies)])
    return out
