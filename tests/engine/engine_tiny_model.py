"""A tiny random Llama that vLLM's CPU backend can serve, built from a config (no downloads).

tests/tiny_model.py's model has head size 16, which vLLM's CPU attention rejects at the first
request ("Unsupported CPU attention configuration: head_dim=16"); this one has head size 64.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_model import build_tiny_tokenizer


def build_engine_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """hidden 256, 4 heads (head size 64), 2 layers, the in-test 300-token BPE tokenizer, fp32.
    Untied embeddings, so greedy answers depend on the prompt (tests/tiny_model.py says why)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
