"""A tiny random Llama that vLLM's CPU backend can serve, built from a config (no downloads).

Two differences from tests/tiny_model.py, both needed by vLLM:
- head size 64 (hidden 256, 4 heads): vLLM's CPU attention rejects head size 16 at the first
  request ("Unsupported CPU attention configuration: head_dim=16");
- the byte-level BPE is trained over an ASCII alphabet. With all 256 bytes, a random model mostly
  emits lone UTF-8 continuation bytes; vLLM's streaming detokenizer holds back text that ends in an
  unfinished character, so such a stream carries no content at all. ASCII tokens always decode.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_model import build_tiny_tokenizer


def build_ascii_tokenizer(out_dir: Path, vocab_size: int = 300):
    from tokenizers import pre_tokenizers

    ascii_bytes = [10, *range(32, 127)]  # newline and printable ASCII
    alphabet = sorted(c for c in pre_tokenizers.ByteLevel.alphabet() if _byte_of(c) in ascii_bytes)
    return build_tiny_tokenizer(out_dir, vocab_size, alphabet=alphabet)


def _byte_of(char: str) -> int:
    """GPT-2's byte-to-unicode map, inverted: printable bytes stand for themselves, the others
    were shifted to 256 + n in byte order."""
    code = ord(char)
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256] if 256 <= code < 256 + len(others) else -1


def build_engine_tiny_model(out_dir: Path, *, seed: int = 2) -> Path:
    """hidden 256, 4 heads (head size 64), 2 layers, an in-test BPE (~200 tokens), fp32.

    Untied embeddings, so greedy answers depend on the prompt (tests/tiny_model.py says why).
    Seed 2 and init std 0.05: with these, greedy runs 16+ tokens on the test prompts instead of
    stopping at once (seed 0 emits EOS first on most), and the wider logit gaps keep two fp32
    implementations from flipping a near-tie."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_ascii_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                         initializer_range=0.05)
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
