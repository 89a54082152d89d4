"""The math of every stage as small typed functions: masked statistics, whitening, pairwise and
DPO losses, the KL penalty, per-token rewards, GAE and the clipped PPO losses.

Shapes: B = batch, T = response length, V = vocabulary. `mask` is 1 on real tokens, 0 on padding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where mask is 1. x, mask: same shape."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions (Bessel-corrected, as a whitening batch is a sample)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Scale to unit variance over the masked positions, and shift to zero mean when shift_mean.

    Advantages are shifted and scaled; rewards only scaled, so their sign (good vs bad) survives.
    Padding stays 0. x, mask: [B, T] -> [B, T]. With `all_sum` (a sum over the ranks of a run) the
    mean and variance are those of every rank's positions together.
    """
    if all_sum is None:
        mean, var = masked_mean(x, mask), masked_var(x, mask)
    else:
        mean, var = global_masked_mean_var(x, mask, all_sum)
    out = (x - mean if shift_mean else x) * torch.rsqrt(var + eps)
    return out * mask.to(x.dtype)


def global_masked_mean_var(x: torch.Tensor, mask: torch.Tensor, all_sum: Callable[[torch.Tensor], torch.Tensor]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """masked_mean and masked_var over the positions of all ranks: sums, counts and squared
    deviations summed across them (two small all-reduces). -> (mean, var), scalars."""
    m = mask.to(x.dtype)
    total = all_sum(torch.stack([(x * m).sum(), m.sum()]).detach())
    n = total[1].clamp(min=1)
    mean = (total[0] / n).to(x.dtype).to(x.device)
    var = all_sum(((x - mean) ** 2 * m).sum().detach())[()] / n
    if total[1] > 1:
        var = var * total[1] / (total[1] - 1)
    return mean, var.to(x.dtype).to(x.device)


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                  kind: str = "bradley_terry", hinge_margin: float = 1.0, center_coef: float = 0.0
                  ) -> torch.Tensor:
    """Reward-model loss on scores chosen, rejected: [B] -> scalar.

    bradley_terry: -log sigmoid(r_c - r_r - margin); hinge: max(0, m - (r_c - r_r)) with m the pair's
    margin when given, else hinge_margin. center_coef adds coef * mean((r_c + r_r)^2), which keeps
    scores near zero without changing their differences.
    """
    diff = chosen - rejected  # [B]
    if kind == "bradley_terry":
        loss = -F.logsigmoid(diff - (margin if margin is not None else 0.0)).mean()
    elif kind == "hinge":
        m = margin if margin is not None else torch.full_like(diff, hinge_margin)
        loss = torch.relu(m - diff).mean()
    else:
        raise ValueError(f"loss must be 'bradley_terry' or 'hinge', got {kind!r}")
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


def token_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token loss over labelled tokens. logits: [B, L, V], labels: [B, L] (unshifted;
    -100 marks prompt and padding) -> scalar."""
    shifted = logits[:, :-1].float()
    target = labels[:, 1:]
    return F.cross_entropy(shifted.reshape(-1, shifted.size(-1)), target.reshape(-1), ignore_index=ignore_index)


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Summed log-prob of the labelled tokens of each row. logits: [B, L, V], labels: [B, L] -> [B]."""
    target = labels[:, 1:]
    mask = target != ignore_index
    logp = logits[:, :-1].float().log_softmax(-1)
    picked = logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)  # [B, L-1]
    return (picked * mask).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, kind: str = "sigmoid", label_smoothing: float = 0.0,
             chosen_tokens: torch.Tensor | None = None, rejected_tokens: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO on summed sequence log-probs [B] -> (loss, chosen rewards [B], rejected rewards [B]).

    The implicit reward is beta * (log pi - log pi_ref); sigmoid is the paper's loss (with optional
    conservative label smoothing), ipo the squared loss towards 1 / (2 beta) on the per-token mean
    log-ratio (the IPO paper's and TRL's form: a sum would make the target depend on length), for
    which chosen_tokens / rejected_tokens [B] give the response lengths.
    """
    chosen_ratio = policy_chosen - ref_chosen  # [B]
    rejected_ratio = policy_rejected - ref_rejected
    if kind == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs chosen_tokens and rejected_tokens (response lengths)")
        chosen_ratio = chosen_ratio / chosen_tokens.clamp(min=1)
        rejected_ratio = rejected_ratio / rejected_tokens.clamp(min=1)
    logits = chosen_ratio - rejected_ratio  # [B]
    if kind == "sigmoid":
        loss = (-(1 - label_smoothing) * F.logsigmoid(beta * logits)
                - label_smoothing * F.logsigmoid(-beta * logits)).mean()
    elif kind == "ipo":
        loss = ((logits - 1 / (2 * beta)) ** 2).mean()
    else:
        raise ValueError(f"loss must be 'sigmoid' or 'ipo', got {kind!r}")
    return loss, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate from sampled tokens. [B, T] -> [B, T].

    k1 = log pi - log pi_ref (unbiased, can be negative per token; what the reward uses);
    k3 = (r - 1) - log r with r = pi_ref / pi (always >= 0, lower variance).
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    if kind == "abs":
        return log_ratio.abs()
    raise ValueError(f"kl estimator must be 'k1', 'k3' or 'abs', got {kind!r}")


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
                      ) -> torch.Tensor:
    """-beta * KL on every response token plus the sequence score on its last real token.
    scores: [B], kl, mask: [B, T] -> [B, T]."""
    rewards = -beta * kl * mask
    last = (mask.sum(-1) - 1).clamp(min=0).long()  # [B]
    return rewards.scatter_add(-1, last[:, None], scores[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses.
    rewards, values, mask: [B, T] -> (advantages [B, T], returns [B, T]), zero on padding.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}; the value after the
    last real token is 0 (the episode ends there).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.size(-1)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # [B]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def leave_one_out_advantages(returns: torch.Tensor, group: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): each response's sequence
    return minus the mean return of the other responses to the same prompt. Rows come in groups of
    `group` consecutive responses to one prompt. returns: [B] -> [B], B a multiple of group >= 2."""
    if group < 2 or returns.numel() % group:
        raise ValueError(f"{returns.numel()} returns do not split into groups of {group} (>= 2) responses")
    r = returns.view(-1, group)
    baseline = (r.sum(-1, keepdim=True) - r) / (group - 1)
    return (r - baseline).reshape(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution. [B, T, V] -> [B, T]."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate: mean of max(-A * ratio, -A * clip(ratio, 1 +- clip)). [B, T] -> scalar."""
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "ratio": masked_mean(ratio, mask).item(),
            "ratio_max": ratio[mask.bool()].max().item() if mask.any() else 1.0,
        }
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: 0.5 * mean(max((V - R)^2, (V_clipped - R)^2)). [B, T] -> scalar."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    loss = 0.5 * masked_mean(losses, mask)
    with torch.no_grad():
        frac = masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).float(), mask).item()
    return loss, {"value_clip_frac": frac}
