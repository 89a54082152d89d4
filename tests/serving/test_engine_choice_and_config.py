"""Which engine serves (RLHF_SERVING_ENGINE), and the vLLM command line the supervisor builds for a
version: a full checkpoint, or a LoRA policy run as its base model with the adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving import engine_choice


@pytest.fixture
def choose(settings):
    def run(setting: str, url: str = "") -> engine_choice.EngineChoice:
        settings.RLHF_SERVING_ENGINE, settings.RLHF_SERVING_ENGINE_URL = setting, url
        return engine_choice.serving_engine()

    return run


def test_explicit_choices(choose):
    assert choose("transformers").name == "transformers"
    external = choose("external", "http://engine:8000/v1")
    assert external.name == "external" and not external.problem
    assert "RLHF_SERVING_ENGINE_URL" in choose("external").problem
    assert choose("auto", "http://engine:8000/v1").name == "external"


def test_auto_is_vllm_where_it_can_run_else_the_fallback_with_the_reason(choose, monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_VENV", str(tmp_path / "no-engine-here"))
    engine_choice._choose.cache_clear()
    fallback = choose("auto")
    assert fallback.name == "transformers" and "no-engine-here" in fallback.why
    vllm = choose("vllm")
    assert vllm.name == "vllm" and "no-engine-here" in vllm.problem  # asked for, cannot run: said so
    monkeypatch.setattr(engine_choice.platform, "system", lambda: "Darwin")
    engine_choice._choose.cache_clear()
    assert "x86_64 Linux" in choose("auto").why
    engine_choice._choose.cache_clear()


def test_engine_config_of_a_full_checkpoint_and_of_a_lora_policy(settings, tmp_path):
    from registry.models import ModelVersion
    from serving.supervisor import engine_config_for

    settings.ARTIFACTS_ROOT = tmp_path
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    config = engine_config_for(ModelVersion(pk=3, path="full"), served_name="mv-3", log_path=tmp_path / "log")
    line = " ".join(config.command(Path("/py"), 9000))
    assert f"--model {tmp_path / 'full'}" in line and "--served-model-name mv-3" in line
    assert "--generation-config vllm" in line and '"max_new_tokens": 256' in line
    assert f"--dtype {settings.RLHF_SERVING_ENGINE_DTYPE}" in line

    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "full", "r": 8}))
    config = engine_config_for(ModelVersion(pk=4, path="lora"), served_name="mv-4", log_path=tmp_path / "log")
    line = " ".join(config.command(Path("/py"), 9000))
    assert f"--model {tmp_path / 'full'}" in line and "--served-model-name mv-4-base" in line
    assert f"--lora-modules mv-4={tmp_path / 'lora'}" in line and "--enable-lora" in line
