"""Compare a candidate policy with the previous one on held-out prompts: mean reward of each,
the reward model's win rate of candidate over previous, and the KL between them on the
candidate's own samples. Used by a self-running round before it promotes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.callbacks import ShouldStop
from rlhf.models import (
    load_policy,
    load_reward_model,
    policy_logits_for_response,
    response_logprobs,
    score_texts,
)
from rlhf.sampling import SamplingConfig, generate
from rlhf.tokenization import encode_prompt


@dataclass
class EvalConfig:
    max_new_tokens: int = 64  # length of each evaluation sample
    temperature: float = 1.0  # plain sampling at this temperature for both policies
    seed: int = 0  # same seed for both policies, so differences come from the weights
    max_length: int = 512  # scoring length cap, as in reward-model training


@torch.no_grad()
def sequence_logprob(model: Any, tokenizer: Any, prompt: Any, response_ids: list[int], temperature: float
                     ) -> float:
    """Summed log-prob of response_ids after the prompt (a user turn of the chat template when plain)."""
    if not response_ids:
        return 0.0
    p = encode_prompt(tokenizer, prompt, wrap_plain=True)
    ids = torch.tensor([p + response_ids], device=next(model.parameters()).device)
    logits = policy_logits_for_response(model, ids, torch.ones_like(ids), len(response_ids))
    return float(response_logprobs(logits, ids[:, len(p):], temperature).sum())


def compare_policies(candidate: str | Path, previous: str | Path, reward_model: str | Path | None,
                     prompts: list, config: EvalConfig | None = None,
                     should_stop: ShouldStop | None = None) -> dict[str, float]:
    """Mean reward of both policies, win rate (ties count half) and KL(candidate || previous)
    estimated as the mean summed log-ratio over the candidate's samples.

    One prompt format everywhere: a plain-string prompt is a user turn of the chat template when
    sampled, when its log-probs are taken and when it is scored, as in training. `should_stop` is
    asked between tokens (StopRequested).
    """
    config = config or EvalConfig()
    sampling = SamplingConfig(strategy="multinomial", temperature=config.temperature,
                              max_new_tokens=config.max_new_tokens, seed=config.seed)
    cand_model, cand_tok = load_policy(candidate)
    prev_model, prev_tok = load_policy(previous)
    cand = [g[0] for g in generate(cand_model, cand_tok, prompts, sampling, wrap_plain=True, should_stop=should_stop)]
    prev = [g[0] for g in generate(prev_model, prev_tok, prompts, sampling, wrap_plain=True, should_stop=should_stop)]
    kls = [sequence_logprob(cand_model, cand_tok, p, g.token_ids, config.temperature)
           - sequence_logprob(prev_model, prev_tok, p, g.token_ids, config.temperature)
           for p, g in zip(prompts, cand, strict=True)]
    report = {"prompts": float(len(prompts)), "kl": sum(kls) / len(kls),
              "length": sum(g.completion_tokens for g in cand) / len(cand)}
    if reward_model is not None:
        reward = load_reward_model(reward_model)
        cand_scores = score_texts(reward, prompts, [g.text for g in cand], max_length=config.max_length)
        prev_scores = score_texts(reward, prompts, [g.text for g in prev], max_length=config.max_length)
        wins = (cand_scores > prev_scores).float() + 0.5 * (cand_scores == prev_scores).float()
        report.update(mean_reward=float(cand_scores.mean()), previous_mean_reward=float(prev_scores.mean()),
                      win_rate=float(wins.mean()))
    return report
