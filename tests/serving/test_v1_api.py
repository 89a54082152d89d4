"""/v1 through Django's test client: answers, usage, streaming events, parameters, errors in
OpenAI's shape, auth (key, session + CSRF) and the rate limit."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.serving.conftest import both

pytestmark = pytest.mark.django_db


def call(client: Client, path: str, body: dict | None = None, key: str | None = None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    if body is None:
        return client.get(path, **headers, **extra)
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers, **extra)


def chat(client, key, **params):
    body = {"model": "latest", "messages": [{"role": "user", "content": "hello world"}], "temperature": 0,
            "max_tokens": 8, **params}
    return call(client, "/v1/chat/completions", body, key)


def events(response) -> list:
    text = b"".join(response.streaming_content).decode()
    chunks = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]", text
    return [json.loads(c) for c in chunks[:-1]]


def assert_openai_error(response, status: int, param: str | None = None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


def test_models_lists_latest_projects_and_versions(demo, api_key):
    data = call(Client(), "/v1/models", key=api_key).json()
    ids = {m["id"]: m for m in data["data"]}
    assert data["object"] == "list"
    assert {"latest", "demo", str(demo["a"].pk), str(demo["b"].pk)} <= set(ids)
    assert ids["latest"]["version_id"] == ids["demo"]["version_id"] == demo["a"].pk


@both
def test_chat_completion_shape_usage_and_determinism(demo, api_key):
    client = Client()
    body = chat(client, api_key).json()
    assert body["object"] == "chat.completion" and body["model"] == "latest"
    assert body["system_fingerprint"] == f"model-version-{demo['a'].pk}"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert chat(client, api_key).json()["choices"][0]["message"] == choice["message"]  # greedy


def test_model_by_project_slug_and_by_version_id(demo, api_key):
    client = Client()
    by_slug = chat(client, api_key, model="demo").json()
    by_id = chat(client, api_key, model=str(demo["b"].pk)).json()
    assert by_slug["system_fingerprint"] == f"model-version-{demo['a'].pk}"
    assert by_id["system_fingerprint"] == f"model-version-{demo['b'].pk}"


@both
def test_n_completions_share_one_prompt_count(demo, api_key):
    body = chat(Client(), api_key, n=3, temperature=1.0, seed=7).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    single = chat(Client(), api_key, n=1).json()
    assert body["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]


@both
def test_seed_makes_sampling_repeatable(demo, api_key):
    first = chat(Client(), api_key, temperature=1.0, top_p=0.9, seed=3).json()["choices"]
    again = chat(Client(), api_key, temperature=1.0, top_p=0.9, seed=3).json()["choices"]
    assert first == again


@both
def test_completions_with_a_list_of_prompts(demo, api_key):
    body = call(Client(), "/v1/completions", {"model": "latest", "prompt": ["the quick", "a reward"],
                                               "max_tokens": 5, "temperature": 0, "n": 2}, api_key).json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["text"] == body["choices"][1]["text"]  # greedy: both completions agree


@both
def test_stop_cuts_the_text(demo, api_key):
    full = call(Client(), "/v1/completions", {"model": "latest", "prompt": "the quick", "max_tokens": 12,
                                               "temperature": 0}, api_key).json()["choices"][0]["text"]
    # The fixture model and greedy decoding make this text the same on every run.
    assert len(full) >= 4, f"the fixture model must say something to cut, said {full!r}"
    stop = full[2:4]
    cut = call(Client(), "/v1/completions", {"model": "latest", "prompt": "the quick", "max_tokens": 12,
                                              "temperature": 0, "stop": stop}, api_key).json()["choices"][0]
    assert cut["text"] == full[:full.find(stop)] and cut["finish_reason"] == "stop"


@both
def test_chat_stream_events_join_to_the_whole_answer(demo, api_key):
    client = Client()
    whole = chat(client, api_key, max_tokens=10).json()
    response = chat(client, api_key, max_tokens=10, stream=True, stream_options={"include_usage": True})
    assert response["Content-Type"].startswith("text/event-stream")
    chunks = events(response)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == whole["choices"][0]["finish_reason"] and set(finish[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == whole["usage"]["prompt_tokens"]


@both
def test_completion_stream(demo, api_key):
    body = {"model": "latest", "prompt": "the quick", "max_tokens": 6, "temperature": 0}
    whole = call(Client(), "/v1/completions", body, api_key).json()["choices"][0]["text"]
    chunks = events(call(Client(), "/v1/completions", {**body, "stream": True}, api_key))
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole


@pytest.mark.parametrize(("params", "param"), [
    ({"temperature": 3}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 5, "top_p": 0.5, "temperature": 1}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 10_000}, "max_tokens"),
    ({"n": 0}, "n"),
    ({"seed": 1.5}, "seed"),
    ({"stop": ["", "x"]}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "n": 2}, "n"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"presence_penalty": 1}, "presence_penalty"),
    ({"model": ""}, "model"),
])
@both
def test_bad_parameters_are_400_naming_the_parameter(demo, api_key, params, param):
    assert_openai_error(chat(Client(), api_key, **params), 400, param)


def test_max_tokens_beyond_the_context_is_400(demo, api_key):
    error = assert_openai_error(chat(Client(), api_key, max_tokens=255), 400, "max_tokens")
    assert error["code"] == "context_length_exceeded" and "256" in error["message"]


def test_bad_json_is_400(api_key):
    response = Client().post("/v1/chat/completions", data="{nope", content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    # Without a key the request is refused before its body is read: 401, in the same shape.
    anonymous = Client().post("/v1/chat/completions", data="{nope", content_type="application/json")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["gpt-4", "999999", "no-such-project"])
@both
def test_unknown_model_is_404(demo, api_key, model):
    error = assert_openai_error(chat(Client(), api_key, model=model), 404, "model")
    assert error["code"] == "model_not_found" and model in error["message"]


def test_latest_without_any_promoted_policy_is_404(db, api_key):
    assert_openai_error(chat(Client(), api_key), 404, "model")


def test_missing_checkpoint_is_503(demo, api_key, broken_artifacts):
    assert_openai_error(chat(Client(), api_key), 503)


def test_unknown_endpoint_and_wrong_method(api_key):
    assert_openai_error(call(Client(), "/v1/embeddings", {"input": "x"}, api_key), 404)
    assert_openai_error(call(Client(), "/v1/chat/completions", key=api_key), 405)


def test_no_key_bad_key_and_revoked_key_are_401(demo, api_key):
    from serving.keys import api_key_revoke
    from serving.models import APIKey

    assert assert_openai_error(chat(Client(), None), 401)["code"] == "missing_api_key"
    assert assert_openai_error(chat(Client(), "rlhf-wrong"), 401)["code"] == "invalid_api_key"
    assert_openai_error(call(Client(), "/v1/models", HTTP_AUTHORIZATION="Basic abc"), 401)
    api_key_revoke(key_id=APIKey.objects.get().pk)
    assert "revoked" in assert_openai_error(chat(Client(), api_key), 401)["message"]


def test_key_use_is_recorded(demo, api_key):
    from serving.models import APIKey

    assert APIKey.objects.get().last_used_at is None
    call(Client(), "/v1/models", key=api_key)
    assert APIKey.objects.get().last_used_at is not None


def test_admin_browser_session_needs_the_csrf_token(demo, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert call(client, "/v1/models").status_code == 200  # GET needs no token
    body = {"model": "latest", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert assert_openai_error(call(client, "/v1/chat/completions", body), 403)["code"] == "csrf_failed"
    token = "a" * 32  # what the csrftoken cookie holds, sent back in the header as the page's JS does
    client.cookies["csrftoken"] = token
    assert call(client, "/v1/chat/completions", body, HTTP_X_CSRFTOKEN=token).status_code == 200


def test_annotator_session_is_403(demo, annotator):
    client = Client()
    client.force_login(annotator)
    assert assert_openai_error(call(client, "/v1/models"), 403)["code"] == "admin_only"


def test_rate_limit_is_429_per_key(demo, api_key, admin_user, settings):
    from serving.keys import api_key_create

    settings.RLHF_API_RATE_LIMIT = 3
    client = Client()
    assert [call(client, "/v1/models", key=api_key).status_code for _ in range(3)] == [200] * 3
    response = call(client, "/v1/models", key=api_key)
    error = assert_openai_error(response, 429)
    assert error["code"] == "rate_limit_exceeded" and int(response["Retry-After"]) > 0
    other = api_key_create(name="other", created_by=admin_user)[1]
    assert call(client, "/v1/models", key=other).status_code == 200  # the budget is per key


def test_completions_are_capped_per_request_and_counted_by_size(demo, api_key, settings):
    """Issue #15 probe: a list of prompts times n once asked for 200 completions as one request."""
    settings.RLHF_SERVING_MAX_CHOICES = 16
    many = call(Client(), "/v1/completions", {"model": "latest", "prompt": ["a"] * 20, "n": 10, "max_tokens": 1},
                api_key)
    error = assert_openai_error(many, 400, "n")
    assert error["code"] == "too_many_completions" and "200 completions" in error["message"]
    settings.RLHF_API_RATE_LIMIT = 10
    ok = call(Client(), "/v1/completions", {"model": "latest", "prompt": ["a", "b"], "n": 4, "max_tokens": 1,
                                             "temperature": 0}, api_key)
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 8
    # That request counted 8 of the 10 a minute: the next one asking for 3 is over the budget.
    over = call(Client(), "/v1/completions", {"model": "latest", "prompt": "a", "n": 3, "max_tokens": 1}, api_key)
    assert_openai_error(over, 429)
