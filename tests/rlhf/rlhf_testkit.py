"""Tiny models and tokenizers built in the tests (no downloads), shared by the rlhf tests."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import torch

from rlhf.tokenization import train_bpe
from tests.tiny_model import build_tiny_model, tiny_causal_lm, tiny_config  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[2]
SMOL_CANDIDATES = (REPO / "data/artifacts/base/SmolLM2-135M-Instruct", Path("/tmp/smol/out"))

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "ran", "to", "the", "park", "while", "birds", "sang", "in", "green", "trees", "good", "bad", "yes", "no", "apple", "banana", "answer", "question", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero", "plus", "minus", "equals", "hello", "world", "please", "thanks"]


def smol_dir() -> Path | None:
    """The converted SmolLM2-135M-Instruct directory, when this machine has it."""
    return next((p for p in SMOL_CANDIDATES if (p / "tokenizer.json").is_file()), None)


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randint(len(WORDS), (int(torch.randint(3, 12, (1,), generator=g)),), generator=g)
        out.append(" ".join(WORDS[i] for i in idx.tolist()))
    return out + [str(i) for i in range(100)]


@functools.lru_cache(maxsize=1)
def _bpe():
    return train_bpe(corpus(), vocab_size=400, min_frequency=1)


def tiny_tokenizer():
    """A fresh copy of a 400-token byte-level BPE with ChatML template and PAD != EOS."""
    import copy

    return copy.deepcopy(_bpe())


def save_tiny_base(path: Path, seed: int = 0, tokenizer=None) -> Path:
    """A tiny causal LM saved as a HF directory, usable as `base` for every stage."""
    return build_tiny_model(path, seed=seed, tokenizer=tokenizer or tiny_tokenizer())


def keyword_pairs(n: int, seed: int, keyword: str = "banana") -> list[dict]:
    """Synthetic preference: the chosen response mentions the keyword, the rejected one does not."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w != keyword]
    pairs = []
    for _ in range(n):
        prompt = " ".join(rng.sample(words, 3))
        body = rng.sample(words, 4)
        chosen = body[:]
        chosen.insert(rng.randrange(5), keyword)
        rejected = rng.sample(words, 5)
        pairs.append({"prompt": prompt, "chosen": " ".join(chosen), "rejected": " ".join(rejected)})
    return pairs
