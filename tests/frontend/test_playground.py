"""The playground in a real browser against two tiny model versions: both columns stream at the same
time, Stop keeps the two conversations in step, the token view shows the ids the model saw and
produced, every answer shows finish reason, usage, latency and version, and "View code" gives a
request that runs as shown."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
from django.conf import settings

from tests.tiny_model import build_tiny_model

from .conftest import login, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

COLUMN = "section[aria-label='Conversation {}']"


@pytest.fixture
def served_models(transactional_db, settings, tmp_path):
    from annotate.services.projects import project_create
    from registry.models import ModelVersion
    from serving.engine import loaded_model_cache_clear

    settings.ARTIFACTS_ROOT = tmp_path
    settings.RLHF_API_RATE_LIMIT = 0
    build_tiny_model(tmp_path / "policies" / "a", seed=0)
    build_tiny_model(tmp_path / "policies" / "b", seed=1)
    project = project_create(name="Demo", slug="demo")
    a = ModelVersion.objects.create(name="policy-a", kind="policy", path="policies/a", source="test",
                                    project=project, promoted=True)
    b = ModelVersion.objects.create(name="policy-b", kind="policy", path="policies/b", source="test",
                                    project=project)
    loaded_model_cache_clear()
    yield a, b
    loaded_model_cache_clear()


class HeldStreams:
    """Holds every /v1 stream of the live server at two gates: before its first token, and after its
    first text delta. `started` counts the streams that reached the first gate."""

    def __init__(self, monkeypatch):
        from rlhf import sampling

        self.before, self.after = threading.Event(), threading.Event()
        self.started = 0
        self._lock = threading.Lock()
        real = sampling.generate_stream

        def held(*args, **kwargs):
            with self._lock:
                self.started += 1
            assert self.before.wait(60)
            deltas = real(*args, **kwargs)
            try:
                first = next(deltas)
            except StopIteration as end:
                return end.value
            yield first
            assert self.after.wait(60)
            return (yield from deltas)

        monkeypatch.setattr(sampling, "generate_stream", held)

    def release(self) -> None:
        self.before.set()
        self.after.set()


@pytest.fixture
def held_streams(monkeypatch):
    held = HeldStreams(monkeypatch)
    yield held
    held.release()  # never leave a server thread waiting


def open_playground(page, a, b, *, max_tokens: int = 12) -> None:
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model", exact=True).select_option(str(a.pk))
    page.get_by_label("Compare two versions side by side").check()
    page.get_by_label("Second model").select_option(str(b.pk))
    page.get_by_label("Strategy").select_option("top_k")
    page.get_by_label("k", exact=True).fill("5")
    page.get_by_label("Max tokens").fill(str(max_tokens))
    page.get_by_label("Seed").fill("3")


def column(page, n: int):
    return page.locator(COLUMN.format(n))


def sse_chunks(response) -> list[dict]:
    text = response.text()
    return [json.loads(e[len("data: "):]) for e in text.split("\n\n") if e.startswith("data: {")]


def test_both_columns_stream_at_once_and_show_what_the_model_saw(page, make_user, served_models, held_streams,
                                                                 screenshot):
    from rlhf.models import load_tokenizer
    from rlhf.tokenization import encode_prompt

    a, b = served_models
    make_user("ada", "admin")
    login(page, "ada")
    open_playground(page, a, b)
    responses = []
    page.on("response", lambda r: responses.append(r) if r.url.endswith("/v1/chat/completions") else None)
    question = "Say hello in **bold**"
    page.get_by_label("Message", exact=True).fill(question)
    page.get_by_role("button", name="Send").click()

    # Both requests are in the server at once, and both columns show that they wait.
    wait_for(page, "() => document.querySelectorAll('.msg.assistant .pg-wait').length === 2")
    for _ in range(300):
        if held_streams.started == 2:
            break
        page.wait_for_timeout(50)
    assert held_streams.started == 2, f"{held_streams.started} stream(s) reached the server while the first was held"
    for n in (1, 2):
        assert column(page, n).get_by_role("status").inner_text() == "Waiting for the model…"
    screenshot(page, "80-playground-waiting")

    # Both have their first words before either is done.
    held_streams.before.set()
    wait_for(page, "() => [...document.querySelectorAll('.msg.assistant')].every(b => b.dataset.status === 'streaming')")
    assert page.locator(".msg.assistant[data-done=true]").count() == 0
    assert page.locator(".msg.assistant .pg-wait").count() == 0, "streaming bubbles show words, not the waiting sign"
    for n in (1, 2):
        assert column(page, n).locator(".msg.assistant .pg-out").inner_text().strip()
    screenshot(page, "81-playground-both-streaming")

    held_streams.after.set()
    for n in (1, 2):
        column(page, n).locator("[aria-label='Answer tokens']").wait_for()
    screenshot(page, "82-playground-answered")

    assert len(responses) == 2
    # The two answers may arrive in either order: each is matched to its column by the model it asked.
    by_model = {json.loads(r.request.post_data)["model"]: r for r in responses}
    messages = [{"role": "user", "content": question}]
    for n, version in ((1, a), (2, b)):
        response = by_model[str(version.pk)]
        col = column(page, n)
        chunks = sse_chunks(response)
        prompt_ids = next(c["prompt_token_ids"] for c in chunks if "prompt_token_ids" in c)
        answer_ids = [i for c in chunks for ch in c["choices"] for i in ch.get("token_ids", [])]
        usage = next(c["usage"] for c in chunks if c.get("usage"))
        finish = next(ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"])

        # The token view shows the ids the model saw (the chat template applied) and produced.
        tokenizer = load_tokenizer(str(settings.ARTIFACTS_ROOT / version.path))
        assert prompt_ids == encode_prompt(tokenizer, messages)
        raw = len(tokenizer(question, add_special_tokens=False)["input_ids"])
        assert len(prompt_ids) > raw
        heading = f"Prompt as the model saw it: {len(prompt_ids)} tokens"
        assert col.get_by_role("heading", name=heading).is_visible()
        shown = [int(t) for t in col.locator("[aria-label='Prompt tokens'] .tok .id").all_inner_texts()]
        assert shown == prompt_ids
        assert col.locator("[aria-label='Prompt tokens'] .tok .piece").first.inner_text() == "<|im_start|>"
        assert [int(t) for t in col.locator("[aria-label='Answer tokens'] .tok .id").all_inner_texts()] == answer_ids
        assert col.get_by_role("heading", name=f"Answer: {len(answer_ids)} generated tokens").is_visible()
        # A token holding part of a character shows its bytes, not a replacement character.
        pieces = col.locator(".tok .piece").all_inner_texts()
        assert not any("\ufffd" in p for p in pieces)
        assert all(re.fullmatch(r"[0-9A-F]{2}( [0-9A-F]{2})*", p)
                   for p in col.locator(".tok.partial .piece").all_inner_texts())
        col.get_by_text("Prompt text after the chat template").click()
        assert col.get_by_label("Templated prompt").inner_text().startswith("<|im_start|>user\nSay hello")

        # Finish reason, usage, latency and the version, as the server reported them.
        bubble = col.locator(".msg.assistant")
        details = bubble.get_by_label("Answer details")
        assert details.locator("[data-field=finish]").inner_text() == f"finish: {finish}"
        assert details.locator("[data-field=usage]").inner_text() == (
            f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion = {usage['total_tokens']} tokens")
        assert usage["completion_tokens"] == len(answer_ids) and usage["prompt_tokens"] == len(prompt_ids)
        assert "total " in details.locator("[data-field=latency]").inner_text()
        assert (bubble.get_by_text("cut off at max tokens").count() == 1) == (finish == "length")
        assert bubble.locator(".pg-version").inner_text() == f"#{version.pk} {version.name}"
        assert not any(word in col.inner_text() for word in ("null", "undefined", "NaN"))
    assert "**bold**" not in column(page, 1).locator(".msg.user").inner_text()


def test_stop_keeps_both_conversations_in_step(page, make_user, served_models, held_streams, screenshot):
    a, b = served_models
    # A busy browser: frames come late (CI's load once left "streaming" bubbles still showing the
    # waiting sign). "streaming" must mean the words are on the page.
    page.add_init_script("const raf = window.requestAnimationFrame.bind(window);"
                         "window.requestAnimationFrame = (cb) => setTimeout(() => raf(cb), 400);")
    make_user("ada", "admin")
    login(page, "ada")
    open_playground(page, a, b, max_tokens=20)
    page.get_by_label("Model", exact=True).select_option("latest")  # an alias: the version it meant is shown
    requests = []
    page.on("request", lambda r: requests.append(r) if r.url.endswith("/v1/chat/completions") else None)
    page.get_by_label("Message", exact=True).fill("first question")
    held_streams.before.set()  # hold each stream after its first words
    page.get_by_role("button", name="Send").click()
    wait_for(page, "() => [...document.querySelectorAll('.msg.assistant')].every(b => b.dataset.status === 'streaming')")
    partial = [column(page, n).locator(".msg.assistant .pg-out").inner_text() for n in (1, 2)]
    page.get_by_role("button", name="Stop").click()
    wait_for(page, "() => document.querySelectorAll('.msg.assistant[data-status=stopped]').length === 2")
    for n in (1, 2):
        bubble = column(page, n).locator(".msg.assistant")
        assert bubble.get_by_text("stopped", exact=True).is_visible()
        assert bubble.locator(".pg-out").inner_text() == partial[n - 1], "the partial answer stays"
    assert column(page, 1).locator(".pg-version").inner_text() == f"#{a.pk} policy-a"
    wait_for(page, "() => document.querySelectorAll('[aria-label=\"Answer tokens\"]').length === 2")
    for n in (1, 2):
        heading = column(page, n).get_by_role("heading", name="Answer, stopped:")
        assert int(heading.inner_text().split(": ")[1].split()[0]) >= 1
    screenshot(page, "83-playground-stopped")
    held_streams.after.set()

    page.get_by_label("Message", exact=True).fill("second question")
    page.get_by_role("button", name="Send").click()
    wait_for(page, "() => document.querySelectorAll('.msg.assistant[data-done=true]').length === 4")
    for n in (1, 2):
        col = column(page, n)
        assert col.locator(".msg.user > div:nth-child(2)").all_inner_texts() == ["first question", "second question"]
        assert col.locator(".msg.assistant").count() == 2
    second = [json.loads(r.post_data) for r in requests[2:]]
    assert len(second) == 2
    for body in second:
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["user", "assistant", "user"]
        assert body["messages"][1]["content"].strip(), "the stopped answer is part of the conversation"
    screenshot(page, "84-playground-after-stop")


def test_view_code_gives_the_current_request_and_it_runs(page, make_user, served_models, live_server, screenshot):
    from serving.keys import api_key_create

    a, b = served_models
    admin = make_user("ada", "admin")
    login(page, "ada")
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model", exact=True).select_option(str(b.pk))
    page.get_by_label("Strategy").select_option("top_k")
    page.get_by_label("k", exact=True).fill("5")
    page.get_by_label("Temperature").fill("0.7")
    page.get_by_label("Max tokens").fill("9")
    page.get_by_label("Seed").fill("11")
    page.get_by_label("System message").fill("Be brief.")
    page.get_by_label("Message", exact=True).fill("What's two plus two?")
    page.get_by_role("button", name="View code").click()
    curl = page.get_by_label("curl", exact=True).inner_text()
    python = page.get_by_label("Python", exact=True).inner_text()
    screenshot(page, "85-playground-code")

    assert curl.startswith(f"curl {live_server.url}/v1/chat/completions")
    assert '"Authorization: Bearer $RLHF_API_KEY"' in curl
    body = json.loads(curl.split("-d '", 1)[1].rsplit("'", 1)[0].replace("'\\''", "'"))
    assert body == {"model": str(b.pk), "max_tokens": 9, "temperature": 0.7, "top_k": 5, "seed": 11,
                    "messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "What's two plus two?"}]}
    assert f'base_url="{live_server.url}/v1"' in python and 'os.environ["RLHF_API_KEY"]' in python
    assert f'model="{b.pk}"' in python and 'extra_body={"top_k":5}' in python

    # A setting changed on the page changes the code at once.
    page.get_by_label("Max tokens").fill("7")
    assert '"max_tokens": 7' in page.get_by_label("curl", exact=True).inner_text()
    assert "max_tokens=7," in page.get_by_label("Python", exact=True).inner_text()
    python = page.get_by_label("Python", exact=True).inner_text()
    curl = page.get_by_label("curl", exact=True).inner_text()

    # Both snippets run as shown, with a real key in the environment.
    key = api_key_create(name="snippet", created_by=admin)[1]
    env = {**os.environ, "RLHF_API_KEY": key}
    ran = subprocess.run([sys.executable, "-c", python], env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert f"model-version-{b.pk}" in ran.stdout.splitlines()[-1]
    ran = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=120)
    answer = json.loads(ran.stdout)
    assert answer["system_fingerprint"] == f"model-version-{b.pk}" and answer["usage"]["completion_tokens"] <= 7


def test_a_failing_column_shows_its_error_and_the_other_still_answers(page, make_user, served_models, screenshot):
    a, b = served_models
    (settings.ARTIFACTS_ROOT / "policies" / "empty").mkdir()
    b.path = "policies/empty"  # a checkpoint that cannot be loaded
    b.save(update_fields=["path"])
    make_user("ada", "admin")
    login(page, "ada")
    open_playground(page, a, b)
    for question in ("first question", "second question"):
        page.get_by_label("Message", exact=True).fill(question)
        page.get_by_role("button", name="Send").click()
        wait_for(page, "n => document.querySelectorAll('.msg.assistant[data-done=true]').length === n",
                 2 if question.startswith("first") else 4)
        failed = column(page, 2).locator(".msg.assistant").last
        assert failed.get_attribute("data-status") == "error"
        assert "cannot be loaded" in failed.get_by_role("alert").inner_text()
        assert column(page, 1).locator(".msg.assistant").last.get_attribute("data-status") == "done"
    for n in (1, 2):  # still in step
        texts = column(page, n).locator(".msg.user > div:nth-child(2)").all_inner_texts()
        assert texts == ["first question", "second question"]
    column(page, 1).locator("[aria-label='Answer tokens']").wait_for()
    screenshot(page, "87-playground-one-column-failed")

    # "Show tokens" hides and brings back the token view of the newest answer.
    page.get_by_label("Show tokens").uncheck()
    assert column(page, 1).locator(".tokens-box").inner_text() == ""
    page.get_by_label("Show tokens").check()
    column(page, 1).locator("[aria-label='Answer tokens'] .tok").first.wait_for()
