"""PPO's optimisation of one rollout batch and the numbers it logs, on one process or as one rank of
many: the module the engine wraps (policy with its value head, or a separate critic), the shuffled
minibatch passes, and the iteration's metrics computed over every rank's rollouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rlhf.callbacks import check_stop
from rlhf.distributed import World
from rlhf.losses import entropy_from_logits, masked_mean, ppo_policy_loss, ppo_value_loss
from rlhf.models import response_logprobs
from rlhf.rollout import Rollout, critic_values
from rlhf.training import optimizer_step


class ActorCritic(nn.Module):
    """What PPO trains, as one module: forward gives the policy's logits and the values at the
    response positions, so an engine (DDP) wraps and syncs exactly the pass the losses come from."""

    def __init__(self, actor: nn.Module, critic: nn.Module | None):
        super().__init__()
        self.actor, self.critic = actor, critic

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return critic_values(self.actor, self.critic, input_ids, attention_mask, length)


def iteration_seed(seed: int | None, rank: int, iteration: int) -> int | None:
    """The seed of one rank's sampling and shuffling in one iteration: drawn fresh each iteration, so
    a resumed run (on any number of processes) needs no per-rank random state to continue."""
    return None if seed is None else (seed * 1_000_003 + rank * 10_007 + iteration) % (2**63 - 1)


def _minibatches(order: torch.Tensor, n_mb: int, mini: int, world: World) -> list[torch.Tensor]:
    """This rank's parts of the n_mb global minibatches of one epoch: as many on every rank (each is
    one synchronised optimizer step), alone exactly the consecutive slices of `mini` rollouts."""
    if world.size == 1:
        return [order[s:s + mini] for s in range(0, order.numel(), mini)]
    return list(torch.tensor_split(order, n_mb))


def ppo_update(trained: Any, rollout: Rollout, config: Any, temperature: float, params: list[nn.Parameter],
               optimizer: Any, scheduler: Any, shuffle: torch.Generator, ctx: Any,
               should_stop: Callable[[], bool] | None, world: World) -> dict[str, float]:
    """ppo_epochs passes of shuffled minibatches over one rollout batch; statistics averaged over
    the passes and the ranks. `should_stop` is asked before every minibatch (StopRequested); with
    several processes it is the agreed stop, a collective that every rank calls as often.

    The first minibatch runs before any step, so its recomputed log-probs must equal the sampler's
    (the old log-probs): their mean gap is logged as "logprob_gap" (bf16 and the KV cache make it
    ~1e-2, not 0).
    """
    B, T = rollout.response_ids.shape
    n_mb = -(-config.rollout_batch_size // config.mini_batch_size)
    sums: dict[str, float] = {}
    count = 0
    for _ in range(config.ppo_epochs):
        for part in _minibatches(torch.randperm(B, generator=shuffle), n_mb, config.mini_batch_size, world):
            check_stop(should_stop)
            # A rank whose share of this minibatch is empty joins the step on a zero-weight row.
            units = float(part.numel())
            mb = (part if part.numel() else torch.zeros(1, dtype=torch.long)).to(rollout.input_ids.device)
            weight = units * world.size / max(float(world.sum(units)), 1e-12) if world.distributed else 1.0
            mask = rollout.response_mask[mb]
            with ctx():
                logits, values = trained(rollout.input_ids[mb], rollout.attention_mask[mb], T)
            logprobs = response_logprobs(logits, rollout.response_ids[mb], temperature)
            if count == 0:
                rollout.logprob_gap = masked_mean((logprobs.detach() - rollout.logprobs[mb]).abs(), mask).item()
            pg_loss, pg = ppo_policy_loss(logprobs, rollout.logprobs[mb], rollout.advantages[mb], mask, config.cliprange)
            vf_loss, vf = ppo_value_loss(values.float(), rollout.values[mb], rollout.returns[mb], mask,
                                         config.cliprange_value)
            # RLOO has no critic: its value loss is logged (against zero returns) but not trained.
            vf_weight = 0.0 if config.advantage == "rloo" else config.vf_coef
            grad_norm = optimizer_step((pg_loss + vf_weight * vf_loss) * weight, params, optimizer, scheduler,
                                       config.max_grad_norm, world)
            with torch.no_grad():
                entropy = masked_mean(entropy_from_logits(logits.detach() / temperature), mask).item()
            step = {"policy_loss": pg_loss.item(), "entropy": entropy, **pg}
            if vf_weight:  # RLOO's value rows would be zeros of a critic nobody trains: not logged
                step.update(value_loss=vf_loss.item(), **vf)
            step = world.reduce_metrics(step, units)
            step["grad_norm"] = grad_norm
            for k, v in step.items():
                sums[k] = max(sums.get(k, v), v) if k == "ratio_max" else sums.get(k, 0.0) + v
            count += 1
    out = {k: (v if k == "ratio_max" else v / count) for k, v in sums.items()}
    if world.distributed and "ratio_max" in out:
        out["ratio_max"] = max(world.gather([out["ratio_max"]]))  # the largest over ranks, not their mean
    return out


def iteration_metrics(iteration: int, rollout: Rollout, stats: dict[str, float], beta: float,
                      picked: list[dict], config: Any, scheduler: Any, world: World) -> dict[str, Any]:
    """One iteration's numbers over every rank's rollouts (gathered per sample, so means, spreads
    and rates are those of the global batch); the sample responses shown are rank 0's."""
    mask = rollout.response_mask
    lengths = mask.sum(-1).float().cpu()
    per_sample = torch.stack([rollout.raw_scores.float().cpu(), rollout.scores.float().cpu(),
                              rollout.kl.sum(-1).float().cpu(), lengths, rollout.ended_with_eos.float().cpu(),
                              (rollout.values * mask).sum(-1).float().cpu()], dim=-1)  # [B_rank, 6]
    rows = torch.stack(world.gather(list(per_sample)))
    raw, score, seq_kl, lengths_all, eos, value_sums = rows.unbind(-1)
    tokens = rollout.response_ids[mask.bool()].cpu()
    token_lists = world.gather([tokens.tolist()])
    distinct = len({t for ts in token_lists for t in ts})
    n_tokens = sum(len(ts) for ts in token_lists)
    mine = picked[:len(rollout.texts)]
    return {
        "iteration": iteration + 1, "total_iterations": config.iterations, "step": iteration + 1,
        "batch_size": rows.size(0), "samples_seen": (iteration + 1) * rows.size(0), "processes": world.size,
        "score": raw.mean().item(), "score_std": raw.std().item() if raw.numel() > 1 else 0.0,
        "reward": score.mean().item(), "kl": seq_kl.mean().item(), "kl_coef": beta,
        "objective": (score - beta * seq_kl).mean().item(),
        "response_length": lengths_all.mean().item(), "response_tokens": int(lengths_all.sum()),
        "eos_rate": eos.mean().item(),
        "distinct_token_ratio": distinct / n_tokens if n_tokens else 0.0,
        "logprob_gap": float(world.reduce_metrics({"gap": rollout.logprob_gap}, float(mask.sum()))["gap"]),
        "lr": scheduler.get_last_lr()[0],
        **({} if config.advantage == "rloo" else
           {"value_mean": (value_sums.sum() / lengths_all.sum().clamp(min=1)).item()}),
        **stats,
        "samples": [{"prompt": p["prompt"], "response": t, "score": s}
                    for p, t, s in zip(mine, rollout.texts, rollout.raw_scores.tolist(), strict=True)
                    ][: config.sample_responses],
    }
