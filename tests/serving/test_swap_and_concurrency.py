"""Serving under load: promotion swaps the model for the next request while one in flight
finishes on the old one; concurrent requests are batched or queued, never interleaved."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

MAX_TOKENS = 12


@pytest.fixture
def client(live, demo, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=api_key, max_retries=0, timeout=60)


def ask(client: openai.OpenAI, content: str, model: str = "latest", **params) -> tuple[str, str]:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                            temperature=0, max_tokens=MAX_TOKENS, **params)
    return answer.choices[0].message.content, answer.system_fingerprint


def ask_streaming(client: openai.OpenAI, content: str, model: str = "latest") -> tuple[str, str]:
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                                 temperature=0, max_tokens=MAX_TOKENS, stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[0].system_fingerprint


def test_promotion_swaps_the_model_and_the_request_in_flight_finishes(client, demo, promote, settings,
                                                                       monkeypatch):
    from rlhf import sampling
    from serving.engine import loaded_versions

    settings.RLHF_SERVING_CACHE_SIZE = 1  # the new version pushes the old one out of the cache
    a, b = demo["a"], demo["b"]
    answer_a = ask(client, "hello world")
    answer_b = ask(client, "hello world", model=str(b.pk))
    assert answer_a[0] != answer_b[0], "the two tiny policies should answer differently"

    # Hold the stream on A after its first step until the swap has happened.
    started, gate = threading.Event(), threading.Event()
    real_stream = sampling.generate_stream

    def held_stream(*args, **kwargs):
        deltas = real_stream(*args, **kwargs)
        started.set()
        assert gate.wait(30)
        return (yield from deltas)

    monkeypatch.setattr(sampling, "generate_stream", held_stream)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(ask_streaming, client, "hello world")
        assert started.wait(30)
        promote(b)
        after = ask(client, "hello world")
        assert after == (answer_b[0], f"model-version-{b.pk}")
        assert loaded_versions() == [b.pk]
        gate.set()
        assert in_flight.result(timeout=60) == (answer_a[0], f"model-version-{a.pk}")


def test_concurrent_requests_are_batched_and_each_equals_its_single_answer(client, demo):
    from serving.engine import loaded_model_peek
    from serving.resolve import served_model_resolve

    prompts = ["hello world", "what is two plus two?", "the quick brown fox", "rank the responses",
               "a reward model", "good morning"]
    alone = {p: ask(client, p)[0] for p in prompts}
    alone_short = ask(client, prompts[0], max_completion_tokens=3)[0]
    loaded = loaded_model_peek(served_model_resolve(model="latest"))
    loaded.batch_sizes.clear()

    # Hold the generation lock while every request arrives, so they all wait at once.
    with ThreadPoolExecutor(len(prompts) + 3) as pool:
        with loaded.lock:
            batched = {p: pool.submit(ask, client, p) for p in prompts}
            streamed = {p: pool.submit(ask_streaming, client, p) for p in prompts[:2]}
            other_config = pool.submit(ask, client, prompts[0], max_completion_tokens=3)
            deadline = time.monotonic() + 30
            while len(loaded._pending) < len(prompts) + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
        answers = {p: f.result(timeout=60)[0] for p, f in batched.items()}
        streams = {p: f.result(timeout=60)[0] for p, f in streamed.items()}
        short = other_config.result(timeout=60)[0]

    assert answers == alone
    assert streams == {p: alone[p] for p in prompts[:2]}
    assert short == alone_short
    # The six same-config requests ran as one batch; the other config ran on its own.
    assert len(prompts) in loaded.batch_sizes and 1 in loaded.batch_sizes


@pytest.mark.django_db
def test_a_stream_closed_early_stops_decoding_and_frees_the_model(demo):
    from rlhf.sampling import SamplingConfig
    from serving.engine import loaded_model_get
    from serving.resolve import served_model_resolve

    loaded = loaded_model_get(served_model_resolve(model="latest"))
    deltas = loaded.stream("the quick", SamplingConfig(strategy="greedy", max_new_tokens=200))
    next(deltas)
    deltas.close()  # what the server does when the client goes away
    assert loaded.lock.acquire(timeout=10), "the decode still holds the model"
    loaded.lock.release()

