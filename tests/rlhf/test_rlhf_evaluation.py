"""Comparing a candidate policy with the previous one: one prompt format for sampling and scoring."""

from __future__ import annotations

from rlhf_testkit import tiny_causal_lm, tiny_tokenizer

from rlhf.evaluation import EvalConfig, compare_policies
from rlhf.models import load_reward_model


def _peaked_model(path, seed: int):
    # Large initial weights: next-token distributions that depend on the prompt, unlike the
    # near-uniform ones of a default init (which sample the same tokens after any prompt).
    tok = tiny_tokenizer()
    tiny_causal_lm(tok, seed=seed, initializer_range=0.5).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_plain_prompts_are_sampled_as_they_are_scored(tmp_path):
    a, b = _peaked_model(tmp_path / "a", 1), _peaked_model(tmp_path / "b", 2)
    rm = load_reward_model(a)  # a fresh head, saved so both calls score with the same one
    rm.model.save_pretrained(tmp_path / "rm")
    rm.tokenizer.save_pretrained(tmp_path / "rm")
    cfg = EvalConfig(max_new_tokens=6, seed=3)
    texts = ["the cat", "hello world", "one two three"]
    plain = compare_policies(a, b, tmp_path / "rm", texts, cfg)
    chat = compare_policies(a, b, tmp_path / "rm", [[{"role": "user", "content": p}] for p in texts], cfg)
    assert plain == chat
