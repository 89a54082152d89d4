"""Tokenization: PAD != EOS, token pieces, the BPE trainer, prompt formatting."""

from __future__ import annotations

import pytest
from rlhf_testkit import corpus, smol_dir, tiny_causal_lm, tiny_tokenizer

from rlhf.tokenization import (
    encode_prompt,
    encode_response,
    ensure_pad_token,
    format_prompt,
    token_pieces,
    train_bpe,
)


def test_train_bpe_respects_vocab_size_and_round_trips():
    tok = train_bpe(corpus(200), vocab_size=300, min_frequency=1)
    assert 259 <= len(tok) <= 300
    text = "the cat sat on a mat, ünïcode ✓ 123"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: nothing is unknown
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["x"], vocab_size=100)


def test_token_pieces_give_ids_and_readable_text():
    tok = tiny_tokenizer()
    text = "the cat sat on a mat"
    pieces = token_pieces(tok, text)
    assert [p["id"] for p in pieces] == tok(text, add_special_tokens=False)["input_ids"]
    assert "".join(p["piece"] for p in pieces) == text
    assert any(p["token"].startswith("Ġ") for p in pieces)


def test_ensure_pad_token_replaces_eos_as_pad():
    tok = tiny_tokenizer()
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    pad = ensure_pad_token(tok)
    assert pad == tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token == "<|endoftext|>"


def test_ensure_pad_token_adds_a_token_and_grows_the_model_when_none_fits():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "</s>": 2}, unk_token="a"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", pad_token="</s>")
    model = tiny_causal_lm(tiny_tokenizer(), vocab_size=3, pad_token_id=2, eos_token_id=2, bos_token_id=0)
    pad = ensure_pad_token(tok, model)
    assert pad == 3 and tok.pad_token == "<|pad|>" and tok.eos_token_id == 2
    assert model.get_input_embeddings().num_embeddings == 4
    assert model.config.pad_token_id == 3 == model.generation_config.pad_token_id


def test_smollm2_tokenizer_gets_endoftext_as_pad():
    path = smol_dir()
    if path is None:
        pytest.skip("SmolLM2 tokenizer not converted on this machine")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.pad_token == tok.eos_token == "<|im_end|>"  # the problem this helper fixes
    ensure_pad_token(tok)
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id


def test_format_prompt_chat_and_plain():
    tok = tiny_tokenizer()
    assert format_prompt(tok, "hello") == "hello"
    chat = format_prompt(tok, "hello", wrap_plain=True)
    assert chat == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert chat == format_prompt(tok, [{"role": "user", "content": "hello"}])
    ids = encode_prompt(tok, "hello", wrap_plain=True)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert encode_response(tok, "yes")[-1] == tok.eos_token_id
