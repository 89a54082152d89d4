"""The playground page when /v1 forwards to a real vLLM: the same page, unchanged, streams the
answer and shows vLLM's token ids, finish reason and usage."""

from __future__ import annotations

import pytest

from tests.engine.conftest import TINY_NAME
from tests.frontend.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.browser]


def test_playground_shows_vllm_token_ids_usage_and_finish(engine, engine_tiny_model_dir, settings, page,
                                                          make_user, screenshot):
    from annotate.models import Project
    from registry.models import ModelVersion
    from rlhf.models import load_tokenizer
    from rlhf.tokenization import encode_prompt

    settings.ARTIFACTS_ROOT = engine_tiny_model_dir.parent
    settings.RLHF_API_RATE_LIMIT = 0
    settings.RLHF_SERVING_ENGINE = "external"
    settings.RLHF_SERVING_ENGINE_URL = engine.base_url + "/v1"
    settings.RLHF_SERVING_ENGINE_MODEL = TINY_NAME
    project = Project.objects.create(name="Demo", slug="demo")
    version = ModelVersion.objects.create(name="tiny", kind="policy", path=engine_tiny_model_dir.name,
                                          source="test", project=project, promoted=True)
    make_user("ada", "admin")
    login(page, "ada")
    page.goto("/playground")
    page.get_by_label("Model", exact=True).select_option("latest")
    page.get_by_label("Strategy").select_option("greedy")
    page.get_by_label("Max tokens").fill("10")
    page.get_by_label("Message", exact=True).fill("hello world")
    page.get_by_role("button", name="Send").click()
    box = page.locator("section[aria-label='Conversation 1']")
    box.locator("[aria-label='Answer tokens']").wait_for(timeout=60_000)
    screenshot(page, "86-playground-on-vllm")

    prompt_ids = encode_prompt(load_tokenizer(str(engine_tiny_model_dir)), [{"role": "user", "content": "hello world"}])
    shown = [int(t) for t in box.locator("[aria-label='Prompt tokens'] .tok .id").all_inner_texts()]
    assert shown == prompt_ids
    answer = box.locator("[aria-label='Answer tokens'] .tok")
    assert answer.count() >= 1
    details = box.get_by_label("Answer details")
    finish = details.locator("[data-field=finish]").inner_text()
    assert finish in ("finish: stop", "finish: length")
    usage = details.locator("[data-field=usage]").inner_text()
    assert usage.startswith(f"{len(prompt_ids)} prompt + {answer.count()} completion")
    assert box.locator(".pg-version").inner_text().endswith(f"#{version.pk} tiny")  # "latest → #1 tiny"
    assert box.locator(".msg.assistant .pg-out").inner_text().strip()
    shown_text = box.inner_text()
    assert "null" not in shown_text and "undefined" not in shown_text and "NaN" not in shown_text
