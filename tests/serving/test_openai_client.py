"""The official `openai` client against a live server: what existing clients will do."""

from __future__ import annotations

import openai
import pytest

from tests.serving.conftest import both


@pytest.fixture
def client(live, demo, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=api_key, max_retries=0, timeout=60)


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is two plus two?"}]


def test_models_list_and_retrieve(client, demo):
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["latest", "demo"] and str(demo["b"].pk) in ids
    assert client.models.retrieve("latest").id == "latest"


@both
def test_chat_completion(client, demo):
    answer = client.chat.completions.create(model="latest", messages=MESSAGES, temperature=0, max_tokens=12)
    assert answer.choices[0].message.role == "assistant"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.system_fingerprint == f"model-version-{demo['a'].pk}"
    assert 0 < answer.usage.completion_tokens <= 12


@both
def test_streaming_joins_to_the_same_answer(client):
    whole = client.chat.completions.create(model="latest", messages=MESSAGES, temperature=0, max_tokens=12)
    stream = client.chat.completions.create(model="latest", messages=MESSAGES, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


@both
def test_legacy_completions_and_top_k_extension(client):
    answer = client.completions.create(model="demo", prompt="the quick brown", max_tokens=5, temperature=0.8,
                                       seed=1, extra_body={"top_k": 5})
    assert answer.object == "text_completion" and answer.choices[0].finish_reason in ("stop", "length")


def test_bad_key_is_an_authentication_error(live, demo):
    bad = openai.OpenAI(base_url=f"{live.url}/v1", api_key="rlhf-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_bad_parameter_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="latest", messages=MESSAGES, temperature=5)
    assert caught.value.param == "temperature"


def test_over_the_limit_is_a_rate_limit_error(client, settings):
    settings.RLHF_API_RATE_LIMIT = 2
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError):
        client.models.list()
