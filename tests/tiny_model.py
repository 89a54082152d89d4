"""The one tiny-model builder of the tests: a Llama-style model from a config (no downloads), with a
tiny byte-level BPE tokenizer. The rlhf tests build theirs with the library's own BPE trainer
(tests/rlhf/rlhf_testkit.py) and these same tiny_config / tiny_causal_lm."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a reward model scores a response to a prompt",
    "annotators rank responses and the policy learns from the pairs",
    "what is two plus two? four. what is three plus four? seven.",
    "hello world, good morning, thank you, yes, no, maybe",
] * 20


def build_tiny_tokenizer(out_dir: Path, vocab_size: int = 300, alphabet: list[str] | None = None):
    """A byte-level BPE trained on CORPUS; `alphabet` limits its initial characters (default: all 256 bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = alphabet if alphabet is not None else pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  limit_alphabet=len(alphabet))
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def tiny_config(tokenizer, **overrides):
    """2 layers, width 64: a model that trains in milliseconds a step."""
    from transformers import LlamaConfig

    kwargs = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def tiny_causal_lm(tokenizer, seed: int = 0, **overrides):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(tokenizer, **overrides)).eval()


def build_tiny_model(out_dir: Path, *, seed: int = 0, tie_embeddings: bool = True, tokenizer=None,
                     **overrides) -> Path:
    """A tiny model and its tokenizer saved as a Hugging Face directory, usable anywhere a model is.
    Untie the embeddings where answers must differ between prompts: a random model with tied ones
    mostly repeats the last prompt token under greedy decoding."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = build_tiny_tokenizer(out_dir)
        overrides = {"num_key_value_heads": 4, "max_position_embeddings": 256, **overrides}
    else:
        tokenizer.save_pretrained(out_dir)
    model = tiny_causal_lm(tokenizer, seed=seed, tie_word_embeddings=tie_embeddings, **overrides)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
