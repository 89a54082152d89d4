"""vLLM's token fields on our /v1 (return_token_ids, return_prompt_text), in the places vLLM 0.32
puts them, and /api/tokenize showing given ids as pieces: what the playground's token view reads."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from .test_v1_api import call, chat, events

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "hello world"}]


@pytest.fixture
def tokenizer(tiny_artifacts):
    from rlhf.models import load_tokenizer

    return load_tokenizer(str(tiny_artifacts / "policies" / "a"))


def test_chat_answer_carries_the_prompt_ids_the_template_made_and_the_generated_ids(demo, api_key, tokenizer):
    from rlhf.tokenization import encode_prompt, format_prompt

    body = chat(Client(), api_key, max_tokens=8, return_token_ids=True, return_prompt_text=True).json()
    assert body["prompt_token_ids"] == encode_prompt(tokenizer, MESSAGES)
    assert body["prompt_text"] == format_prompt(tokenizer, MESSAGES) and "<|im_start|>user" in body["prompt_text"]
    assert len(body["prompt_token_ids"]) == body["usage"]["prompt_tokens"]
    choice = body["choices"][0]
    assert len(choice["token_ids"]) == body["usage"]["completion_tokens"]
    text = tokenizer.decode(choice["token_ids"], skip_special_tokens=True)
    assert text == choice["message"]["content"]
    plain = chat(Client(), api_key, max_tokens=8).json()
    assert "prompt_token_ids" not in plain and "prompt_text" not in plain and "token_ids" not in plain["choices"][0]
    assert plain["choices"][0]["message"] == choice["message"]  # greedy: the same answer


def test_chat_stream_has_prompt_ids_in_the_first_chunk_and_each_chunk_its_own_ids(demo, api_key):
    whole = chat(Client(), api_key, max_tokens=10, return_token_ids=True, return_prompt_text=True).json()
    chunks = events(chat(Client(), api_key, max_tokens=10, stream=True, return_token_ids=True,
                         return_prompt_text=True, stream_options={"include_usage": True}))
    first, rest = chunks[0], chunks[1:]
    assert first["prompt_token_ids"] == whole["prompt_token_ids"] and first["prompt_text"] == whole["prompt_text"]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert not any("prompt_token_ids" in c for c in rest)
    ids = [i for c in rest for choice in c["choices"] for i in choice.get("token_ids", [])]
    assert ids == whole["choices"][0]["token_ids"]
    with_text = [c for c in rest if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert with_text and all(c["choices"][0]["token_ids"] for c in with_text)
    assert rest[-1]["usage"]["completion_tokens"] == len(ids)


def test_completion_has_the_ids_in_each_choice(demo, api_key, tokenizer):
    body = {"model": "latest", "prompt": ["the quick", "a reward"], "max_tokens": 5, "temperature": 0,
            "return_token_ids": True}
    answer = call(Client(), "/v1/completions", body, api_key).json()
    for choice, prompt in zip(answer["choices"], body["prompt"], strict=True):
        assert choice["prompt_token_ids"] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(choice["token_ids"], skip_special_tokens=True) == choice["text"]
    chunks = events(call(Client(), "/v1/completions", {**body, "prompt": "the quick", "stream": True}, api_key))
    assert chunks[0]["choices"][0]["prompt_token_ids"] == answer["choices"][0]["prompt_token_ids"]
    assert [i for c in chunks for i in c["choices"][0].get("token_ids", [])] == answer["choices"][0]["token_ids"]


def test_the_stream_ids_of_a_stopped_text_are_a_prefix_of_what_was_drawn(demo, api_key):
    """With a stop string the ids of text held back and then cut are not sent at the end."""
    body = {"model": "latest", "prompt": "the quick", "max_tokens": 12, "temperature": 0, "return_token_ids": True}
    full = call(Client(), "/v1/completions", body, api_key).json()["choices"][0]
    assert len(full["text"]) >= 4
    stop = full["text"][2:4]
    cut = call(Client(), "/v1/completions", {**body, "stop": stop}, api_key).json()["choices"][0]
    chunks = events(call(Client(), "/v1/completions", {**body, "stop": stop, "stream": True}, api_key))
    streamed = [i for c in chunks for i in c["choices"][0].get("token_ids", [])]
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut["text"]
    assert streamed[:len(cut["token_ids"])] == cut["token_ids"] and full["token_ids"][:len(streamed)] == streamed


@pytest.mark.parametrize("name", ["return_token_ids", "return_prompt_text"])
def test_the_flags_must_be_booleans(demo, api_key, name):
    response = chat(Client(), api_key, **{name: "yes"})
    assert response.status_code == 400 and response.json()["error"]["param"] == name


def test_tokenize_shows_given_ids_as_pieces_special_tokens_included(annotator, demo, tokenizer):
    from rlhf.tokenization import encode_prompt

    client = APIClient()
    client.force_authenticate(annotator)
    ids = encode_prompt(tokenizer, MESSAGES)
    body = client.post("/api/tokenize", {"model": "latest", "ids": ids}, format="json").json()
    assert [t["id"] for t in body["tokens"]] == ids
    assert body["tokens"][0]["piece"] == "<|im_start|>"
    assert "".join(t["piece"] for t in body["tokens"]) == tokenizer.decode(ids)


@pytest.mark.parametrize(("payload", "words"), [
    ({"ids": [1, 10_000_000]}, "10000000 is not in this model's vocabulary"),
    ({"ids": ["x"]}, "integer"),
    ({}, "either 'text' or 'ids'"),
    ({"text": "a", "ids": [1]}, "either 'text' or 'ids'"),
])
def test_tokenize_bad_ids_are_400_in_the_api_shape(annotator, demo, payload, words):
    client = APIClient()
    client.force_authenticate(annotator)
    response = client.post("/api/tokenize", {"model": "latest", **payload}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert words in str(error), error
