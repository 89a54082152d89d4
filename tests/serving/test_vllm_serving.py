"""/v1 forwarding to a real vLLM (the session's engine on tiny policy A): streams pass through as
the engine sends them, a client that goes away aborts the engine's request, the engine's token
ids and usage come back unchanged; and without a ready engine /v1 answers 503 and /healthz says why."""

from __future__ import annotations

import http.client
import json
import time

import pytest
from django.test import Client

from tests.serving.conftest import register_engine

MESSAGES = [{"role": "user", "content": "hello world"}]


def post(body: dict, key: str, path: str = "/v1/chat/completions"):
    return Client().post(path, data=json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {key}")


def open_stream(live, key: str, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    host, port = live.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": "latest", "stream": True, **body}),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    return conn, response


def generated_tokens(engine) -> float:
    """vLLM's count of tokens it has generated (all requests, counted step by step, aborted ones too)."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"{engine.base_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in re.findall(r"^vllm:generation_tokens_total(?:{[^}]*})? ([0-9.e+-]+)$", text, re.M))


def wait_until_idle(engine, seconds: float = 15) -> float:
    from enginectl.engine_process import requests_in_flight

    start = time.monotonic()
    while (requests_in_flight(engine.base_url) or 0) > 0:
        assert time.monotonic() - start < seconds, f"the engine still runs a request after {seconds} s"
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.mark.parametrize("engine_kind", ["vllm"], indirect=True)
@pytest.mark.engine
@pytest.mark.slow
def test_token_ids_logprobs_and_usage_come_from_the_engine(demo, api_key, engine_tiny_model_dir):
    from transformers import AutoTokenizer

    from rlhf.tokenization import encode_prompt

    body = post({"model": "latest", "messages": MESSAGES, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
                 "return_token_ids": True, "logprobs": True, "top_logprobs": 2}, api_key).json()
    tokenizer = AutoTokenizer.from_pretrained(engine_tiny_model_dir)
    choice = body["choices"][0]
    assert body["model"] == "latest" and body["system_fingerprint"] == f"model-version-{demo['a'].pk}"
    assert body["prompt_token_ids"] == encode_prompt(tokenizer, MESSAGES)  # the templated prompt
    assert len(choice["token_ids"]) == 6 and choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["content"]) == 6
    assert body["usage"]["prompt_tokens"] == len(body["prompt_token_ids"]) and body["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("engine_kind", ["vllm"], indirect=True)
@pytest.mark.engine
@pytest.mark.slow
def test_stream_passes_through_while_the_engine_decodes(live, demo, api_key, engine):
    """The first events reach the client while the engine is still generating: nothing is buffered."""
    conn, response = open_stream(live, api_key, {"messages": MESSAGES, "max_tokens": 1000, "temperature": 0,
                                                 "ignore_eos": True, "return_token_ids": True,
                                                 "stream_options": {"include_usage": True}})
    from enginectl.engine_process import requests_in_flight

    events, running_after_first = [], None
    try:
        for raw in response:
            if raw.startswith(b"data: {"):
                events.append(json.loads(raw[6:]))
                if len(events) == 1:  # the earliest moment: on a loaded machine a tiny model is quick
                    running_after_first = requests_in_flight(engine.base_url)
            elif raw.strip() == b"data: [DONE]":
                break
    finally:
        conn.close()
    assert running_after_first == 1, "the first chunks only came once the engine had finished"
    assert all(e["model"] == "latest" and e["system_fingerprint"] == f"model-version-{demo['a'].pk}" for e in events)
    tokens = [t for e in events if e["choices"] for t in e["choices"][0].get("token_ids") or []]
    assert len(tokens) == 1000  # vLLM's per-chunk token ids, passed on
    assert events[-1]["usage"]["completion_tokens"] == 1000


@pytest.mark.parametrize("engine_kind", ["vllm"], indirect=True)
@pytest.mark.engine
@pytest.mark.slow
def test_client_that_goes_away_aborts_the_engine_request(live, demo, api_key, engine):
    from enginectl.engine_process import requests_in_flight

    # The engine decodes ahead of what the client reads, so on a loaded machine even 1,000 tokens can
    # be complete in the engine before the hang-up reaches it (before the client has its third event,
    # or before the relay's next write fails): then nothing is left to abort and the attempt is made
    # again. The test fails when no hang-up of five stops a decode the engine was still running.
    outcomes = []
    for _attempt in range(5):
        tokens_before = generated_tokens(engine)
        conn, response = open_stream(live, api_key, {"messages": MESSAGES, "max_tokens": 1000, "temperature": 0,
                                                     "ignore_eos": True})
        seen = 0
        for raw in response:
            seen += raw.startswith(b"data: {")
            if seen >= 3:
                break
        running = requests_in_flight(engine.base_url)
        response.close()  # holds the socket: the client hangs up
        conn.close()
        assert wait_until_idle(engine) < 15
        # vLLM 0.32 counts no aborted request in request_success; the tokens it decoded tell instead.
        decoded = generated_tokens(engine) - tokens_before
        outcomes.append((running, decoded))
        if running and 3 <= decoded < 1000:
            break
    else:
        raise AssertionError(f"no hang-up aborted the engine's decode (running, tokens decoded): {outcomes}")
    again = post({"model": "latest", "messages": MESSAGES, "max_tokens": 3, "temperature": 0}, api_key)
    assert again.status_code == 200


@pytest.mark.parametrize("engine_kind", ["vllm"], indirect=True)
@pytest.mark.engine
@pytest.mark.slow
def test_client_that_hangs_up_before_a_whole_answer_aborts_the_engine_request(demo, api_key, engine):
    """Not streaming: the engine answers only when done, so the proxy watches the client's socket
    (gunicorn's, in the WSGI environ; here one end of a socket pair) and a hang-up aborts the decode."""
    import socket
    import threading

    from enginectl.engine_process import requests_in_flight

    outcomes = []
    for _attempt in range(5):  # as above: on a loaded machine the engine may finish first
        ours, theirs = socket.socketpair()  # ours: the server's end; theirs: the client's
        running = []

        def hang_up_once_running(theirs=theirs, running=running):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not requests_in_flight(engine.base_url):
                time.sleep(0.05)
            running.append(requests_in_flight(engine.base_url))
            theirs.close()

        tokens_before = generated_tokens(engine)
        watcher = threading.Thread(target=hang_up_once_running)
        watcher.start()
        started = time.monotonic()
        response = Client().post("/v1/chat/completions", content_type="application/json",
                                 data=json.dumps({"model": "latest", "messages": MESSAGES, "max_tokens": 1000,
                                                  "temperature": 0, "ignore_eos": True}),
                                 HTTP_AUTHORIZATION=f"Bearer {api_key}", **{"gunicorn.socket": ours})
        watcher.join()
        ours.close()
        assert wait_until_idle(engine) < 15
        decoded = generated_tokens(engine) - tokens_before
        outcomes.append((response.status_code, running, decoded, round(time.monotonic() - started, 1)))
        if running == [1] and response.status_code == 499:
            assert decoded < 1000, outcomes
            break
    else:
        raise AssertionError(f"no hang-up aborted the engine's decode (status, running, decoded, s): {outcomes}")
    again = post({"model": "latest", "messages": MESSAGES, "max_tokens": 3, "temperature": 0}, api_key)
    assert again.status_code == 200


# ---- no engine ready: 503 in OpenAI's shape, /healthz says which engine and why -------------------


@pytest.fixture
def vllm_without_engine(settings, demo):
    """RLHF_SERVING_ENGINE=vllm with no engine process: what /v1 sees before the supervisor runs."""
    from serving import engine_choice

    settings.RLHF_SERVING_ENGINE = "vllm"
    if engine_choice.vllm_missing_reason():
        pytest.skip(f"vLLM cannot run here: {engine_choice.vllm_missing_reason()}")
    return demo


def assert_503(response, code: str, *words: str) -> dict:
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == code, error
    for word in words:
        assert word in error["message"], error["message"]
    return error


BODY = {"model": "latest", "messages": MESSAGES, "max_tokens": 3}


def test_no_engine_is_503_naming_the_supervisor(vllm_without_engine, api_key):
    response = post(BODY, api_key)
    assert_503(response, "engine_unavailable", "run_engines", f"model version {vllm_without_engine['a'].pk}")
    assert int(response["Retry-After"]) > 0
    health = Client().get("/healthz").json()
    assert "engine" in health["failed"]
    assert health["checks"]["engine"]["engine"] == "vllm" and "run_engines" in health["checks"]["engine"]["error"]


def test_starting_engine_is_503_with_retry_after(vllm_without_engine, api_key):
    from django.utils import timezone

    from serving.models import Engine

    Engine.objects.create(model_version=vllm_without_engine["a"], state="starting", started_at=timezone.now())
    response = post(BODY, api_key)
    assert_503(response, "engine_starting", "starting")
    assert response["Retry-After"] == "5"
    assert Client().get("/healthz").json()["checks"]["engine"]["error"].endswith("is starting")


def test_dead_engine_is_503_unreachable(vllm_without_engine, api_key):
    from enginectl.engine_process import free_port
    from serving.models import Engine

    Engine.objects.create(model_version=vllm_without_engine["a"], state="ready", served_name="mv",
                          base_url=f"http://127.0.0.1:{free_port()}")
    assert_503(post(BODY, api_key), "engine_unavailable", "unreachable")
    assert_503(post({**BODY, "stream": True}, api_key), "engine_unavailable", "unreachable")


def test_failed_engine_is_503_with_its_error(vllm_without_engine, api_key):
    from django.utils import timezone

    from serving.models import Engine

    Engine.objects.create(model_version=vllm_without_engine["a"], state="failed", stopped_at=timezone.now(),
                          error="Unsupported CPU attention configuration: head_dim=16")
    assert_503(post(BODY, api_key), "engine_failed", "head_dim=16")
    assert "head_dim=16" in Client().get("/healthz").json()["checks"]["engine"]["error"]


def test_a_version_without_engine_is_requested_on_demand(vllm_without_engine, api_key):
    from serving.models import Engine

    b = vllm_without_engine["b"]
    assert_503(post({**BODY, "model": str(b.pk)}, api_key), "model_loading", "started")
    assert Engine.objects.get(model_version=b).state == "requested"
    assert_503(post({**BODY, "model": str(b.pk)}, api_key), "model_loading")  # asked once, not twice
    assert Engine.objects.filter(model_version=b).count() == 1


@pytest.mark.parametrize("engine_kind", ["vllm"], indirect=True)
@pytest.mark.engine
@pytest.mark.slow
def test_alias_answers_from_the_previous_version_until_the_new_one_is_ready(demo, api_key, engine, promote):
    """During a swap: B is promoted, its engine still starting; "latest" keeps answering from A's
    engine (and says so in system_fingerprint); B by id is 503 until its engine is ready."""
    from serving.models import Engine

    promote(demo["b"])
    Engine.objects.create(model_version=demo["b"], state="starting")
    answer = post(BODY, api_key)
    assert answer.status_code == 200 and answer.json()["system_fingerprint"] == f"model-version-{demo['a'].pk}"
    assert_503(post({**BODY, "model": str(demo["b"].pk)}, api_key), "engine_starting")
    health = Client().get("/healthz").json()["checks"]["engine"]
    assert health["ok"] and {e["state"] for e in health["engines"]} == {"ready", "starting"}
    # B's engine ready (the session's engine stands in for it): "latest" is B now.
    Engine.objects.filter(model_version=demo["b"]).delete()
    register_engine(demo["b"], engine)
    assert post(BODY, api_key).json()["system_fingerprint"] == f"model-version-{demo['b'].pk}"
