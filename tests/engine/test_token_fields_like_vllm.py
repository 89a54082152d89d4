"""return_token_ids / return_prompt_text: our built-in /v1 engine answers with vLLM's field names in
vLLM's places and the same values, and /v1 forwarding to the real vLLM passes them through; so the
playground's token view reads one shape whichever engine answered."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.engine.conftest import TINY_NAME
from tests.engine.test_vllm_engine import chat as vllm_chat
from tests.engine.test_vllm_engine import open_stream, sse_events

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.django_db]

MESSAGES = [{"role": "user", "content": "hello world"}]
PARAMS = {"max_tokens": 10, "temperature": 0, "return_token_ids": True, "return_prompt_text": True}


@pytest.fixture
def ours(engine_tiny_model_dir, settings, admin_user):
    """Our /v1 serving the engine's tiny model as 'latest', and an API key for it."""
    from annotate.models import Project
    from registry.models import ModelVersion
    from serving.engine import loaded_model_cache_clear
    from serving.keys import api_key_create

    settings.ARTIFACTS_ROOT = engine_tiny_model_dir.parent
    settings.RLHF_API_RATE_LIMIT = 0
    project = Project.objects.create(name="Demo", slug="demo")
    ModelVersion.objects.create(name="tiny", kind="policy", path=engine_tiny_model_dir.name, source="test",
                                project=project, promoted=True)
    loaded_model_cache_clear()
    yield api_key_create(name="tests", created_by=admin_user)[1]
    loaded_model_cache_clear()


def our_chat(key: str, **params):
    body = {"model": "latest", "messages": MESSAGES, **params}
    return Client().post("/v1/chat/completions", data=json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {key}")


def our_events(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode()
    return [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]


def stream_ids(events: list[dict]) -> list[int]:
    return [i for e in events for c in e["choices"] for i in (c.get("token_ids") or [])]


def test_whole_answer_has_the_same_fields_and_ids_as_vllm(engine, ours):
    theirs = vllm_chat(engine, "hello world", **PARAMS)
    mine = our_chat(ours, **PARAMS).json()
    assert mine["prompt_token_ids"] == theirs["prompt_token_ids"]
    assert mine["prompt_text"] == theirs["prompt_text"]
    # Greedy: vLLM's decode is ours (test_vllm_engine), so the generated ids agree too.
    assert mine["choices"][0]["token_ids"] == theirs["choices"][0]["token_ids"]
    assert mine["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"] == len(theirs["prompt_token_ids"])


def test_stream_puts_the_fields_where_vllm_does(engine, ours):
    conn, resp = open_stream(engine, {"messages": MESSAGES, **PARAMS, "stream_options": {"include_usage": True}})
    try:
        theirs = sse_events(resp)
    finally:
        conn.close()
    mine = our_events(our_chat(ours, **PARAMS, stream=True, stream_options={"include_usage": True}))
    for events in (theirs, mine):
        first = events[0]
        assert first["choices"][0]["delta"]["role"] == "assistant"
        assert first["prompt_token_ids"] and isinstance(first["prompt_text"], str)
        assert not any(e.get("prompt_token_ids") for e in events[1:])
        assert all(e["choices"][0].get("token_ids") for e in events[1:] if e["choices"]
                   and e["choices"][0]["delta"].get("content"))
    assert mine[0]["prompt_token_ids"] == theirs[0]["prompt_token_ids"]
    assert mine[0]["prompt_text"] == theirs[0]["prompt_text"]
    assert stream_ids(mine) == stream_ids(theirs)


def test_forwarding_to_vllm_passes_the_fields_through(engine, ours, settings):
    settings.RLHF_SERVING_ENGINE_URL = engine.base_url + "/v1"
    settings.RLHF_SERVING_ENGINE_MODEL = TINY_NAME
    whole = our_chat(ours, **PARAMS).json()
    assert whole["prompt_token_ids"] and whole["choices"][0]["token_ids"] and whole["prompt_text"]
    events = our_events(our_chat(ours, **PARAMS, stream=True))
    assert events[0]["prompt_token_ids"] == whole["prompt_token_ids"]
    assert stream_ids(events) == whole["choices"][0]["token_ids"]
