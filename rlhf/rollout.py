"""PPO rollouts: sample responses, score them (reward model or scorer), and compute the old
log-probs, reference log-probs, values, per-token rewards and advantages of one batch."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.callbacks import OnStage, ShouldStop, stage_begins
from rlhf.losses import gae, kl_penalty, leave_one_out_advantages, masked_whiten, per_token_rewards
from rlhf.models import (
    RewardModel,
    policy_logits_for_response,
    response_logprobs,
    score_texts,
    token_scores,
)
from rlhf.sampling import SamplingConfig, TokenBatch, generate_tokens, model_device
from rlhf.scorers import Scorer


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P+T] left-padded prompt then right-padded response
    attention_mask: torch.Tensor  # [B, P+T]
    response_ids: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] 1 up to and including EOS
    logprobs: torch.Tensor  # [B, T] policy log-probs before the update (the sampler's)
    ref_logprobs: torch.Tensor  # [B, T]
    values: torch.Tensor  # [B, T]
    scores: torch.Tensor  # [B] the score used in the reward (after normalisation and EOS penalty)
    raw_scores: torch.Tensor  # [B] scorer / reward model output as it came
    texts: list[str]
    ended_with_eos: torch.Tensor  # [B] bool
    logprob_gap: float  # mean |sampling log-prob - recomputed log-prob| (set by the update): ~0
    timings: dict[str, float]
    engine_logprob_gap: float | None = None  # rollouts on an engine: mean |engine's - trainer's log-prob|
    advantages: torch.Tensor | None = None  # [B, T] whitened
    returns: torch.Tensor | None = None  # [B, T]
    kl: torch.Tensor | None = None  # [B, T] per-token k1 KL on the sampled tokens


@torch.no_grad()
def score_responses(prompts: list[Any], texts: list[str], references: list[str | None], *,
                    reward_model: RewardModel | None, scorer: Scorer | None, max_length: int,
                    wrap_plain: bool) -> torch.Tensor:
    """Raw scores [B] from the scorer, or from the reward model on the text (formatted as in
    reward-model training; see models.score_texts)."""
    if scorer is not None:
        return torch.tensor([float(scorer(p, t, r)) for p, t, r in zip(prompts, texts, references, strict=True)])
    assert reward_model is not None
    return score_texts(reward_model, prompts, texts, max_length=max_length, wrap_plain=wrap_plain,
                       batch_size=max(len(prompts), 1))


def critic_values(actor: Any, critic: Any | None, ids: torch.Tensor, mask: torch.Tensor, length: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, T, V], values [B, T]) at the positions predicting the response."""
    logits, values = actor(ids, mask, length)
    if critic is not None:
        values = token_scores(critic, ids, mask)[:, -(length + 1):-1]
    return logits, values


def values_only(actor: Any, critic: Any | None, ids: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    """Values [B, T] at the positions predicting the response, without the policy's logits."""
    if critic is not None:
        return token_scores(critic, ids, mask)[:, -(length + 1):-1]
    return actor.values(ids, mask, length)


@torch.no_grad()
def collect_rollout(*, actor: Any, critic: Any | None, reference: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
                    tokenizer: Any, prompts: list[Any], prompt_ids: list[list[int]], references: list[str | None],
                    sampling: SamplingConfig, generator: torch.Generator | None, eos_ids: list[int],
                    reward_model: RewardModel | None, scorer: Scorer | None, config: Any,
                    autocast_ctx: Callable[[], contextlib.AbstractContextManager],
                    should_stop: ShouldStop | None = None, on_stage: OnStage | None = None,
                    engine: Any | None = None, seed: int | None = None) -> Rollout:
    """Generate, score and evaluate one batch; `reference(ids, mask, T)` gives the reference logits.
    `should_stop` is asked at every decoded token (StopRequested). With `engine` (an
    rlhf.rollout_engine.EngineRollouts holding the current adapter) the engine samples, with `seed`,
    and the old log-probs are recomputed here."""
    policy = actor.policy
    t0 = time.perf_counter()
    engine_lps = None
    if engine is not None:
        batch, engine_lps = engine.sample(prompt_ids, sampling, seed=seed, pad_id=tokenizer.pad_token_id,
                                          eos_ids=eos_ids)
        device = model_device(policy)
        batch = TokenBatch(*(t.to(device) for t in (batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                                    batch.response_mask, batch.logprobs, batch.ended_with_eos)))
    else:
        with autocast_ctx():
            batch = generate_tokens(policy, prompt_ids, sampling, pad_id=tokenizer.pad_token_id,
                                    eos_ids=eos_ids, generator=generator, should_stop=should_stop)
    t1 = time.perf_counter()
    lengths = batch.response_mask.sum(-1)
    texts = [tokenizer.decode(batch.response_ids[i, : int(n) - int(batch.ended_with_eos[i])].tolist(),
                              skip_special_tokens=True) for i, n in enumerate(lengths)]
    stage_begins(on_stage, "scoring")
    with autocast_ctx():
        raw = score_responses(prompts, texts, references, reward_model=reward_model, scorer=scorer,
                              max_length=config.max_length, wrap_plain=config.wrap_plain_prompts)
    scores = raw.clone()
    if reward_model is not None and config.normalize_scores:
        scores = (scores - reward_model.mean) / reward_model.std
    if config.missing_eos_penalty is not None:
        # No EOS means a truncated answer; a fixed low score stops the policy from rambling.
        scores[~batch.ended_with_eos.cpu()] = config.missing_eos_penalty
    t2 = time.perf_counter()
    ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
    T = batch.response_ids.size(1)
    with autocast_ctx():
        # The sampler's log-probs are the old log-probs (it sampled from this very policy at this
        # temperature, unfiltered): no second policy pass over the vocabulary. The update checks
        # them against a recomputation on its first minibatch ("logprob_gap"). An engine's are
        # recomputed on the trainer's weights: the ratio must start at 1 on exactly these weights.
        if engine is not None:
            logits = policy_logits_for_response(policy, ids, mask, T)
            batch.logprobs = response_logprobs(logits, batch.response_ids, sampling.temperature) * batch.response_mask
            del logits
        # RLOO needs no values: its baseline is the other responses to the same prompt.
        values = (torch.zeros(mask.size(0), T, device=ids.device) if config.advantage == "rloo"
                  else values_only(actor, critic, ids, mask, T))
        ref_logits = reference(ids, mask, T)
    ref_logprobs = response_logprobs(ref_logits, batch.response_ids, sampling.temperature)
    rmask = batch.response_mask
    t3 = time.perf_counter()
    timings = {"time_generate_s": t1 - t0, "time_score_s": t2 - t1, "time_forward_s": t3 - t2}
    gap = None
    if engine_lps is not None:
        m = rmask.cpu().float()
        gap = float(((engine_lps - batch.logprobs.float().cpu()).abs() * m).sum() / m.sum().clamp(min=1))
        timings.update(engine.timings)
    return Rollout(ids, mask, batch.response_ids, rmask, batch.logprobs * rmask, ref_logprobs * rmask,
                   values.float() * rmask, scores.to(ids.device), raw, texts, batch.ended_with_eos, 0.0,
                   timings, engine_logprob_gap=gap)



def add_advantages(rollout: Rollout, *, kl_coef: float, kl_estimator: str, gamma: float, lam: float,
                   whiten_rewards: bool, all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   estimator: str = "gae", group: int = 1) -> Rollout:
    """Per-token rewards (-beta * KL, score on the last token), then advantages, whitened.

    "gae": generalised advantage estimation on the critic's values. "rloo": each response's return
    (its score minus beta times its summed KL) minus the mean return of the other `group - 1`
    responses to its prompt (consecutive rows), on every token of the response; the returns are
    the values (no value loss). With `all_sum` (several processes) whitening uses the statistics of
    every rank's rollouts; RLOO's groups never straddle ranks."""
    mask = rollout.response_mask
    kl = kl_penalty(rollout.logprobs, rollout.ref_logprobs, kl_estimator) * mask
    rewards = per_token_rewards(rollout.scores, kl, mask, kl_coef)
    if estimator == "rloo":
        seq = leave_one_out_advantages(rewards.sum(-1), group)
        advantages = seq[:, None].to(rewards.dtype) * mask
        returns = rollout.values
    else:
        rows = mask.size(0) if all_sum is None else int(all_sum(torch.tensor(float(mask.size(0)))))
        # Scale-only whitening needs enough samples for a stable std (the checklist says >= 8).
        if whiten_rewards and rows >= 8:
            rewards = masked_whiten(rewards, mask, shift_mean=False, all_sum=all_sum)
        advantages, returns = gae(rewards, rollout.values, mask, gamma, lam)
    rollout.advantages = masked_whiten(advantages, mask, all_sum=all_sum)
    rollout.returns = returns
    rollout.kl = kl
    return rollout
