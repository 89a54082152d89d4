"""The math against hand-computed values and a plain-loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.losses import (
    dpo_loss,
    entropy_from_logits,
    gae,
    kl_penalty,
    leave_one_out_advantages,
    masked_mean,
    masked_var,
    masked_whiten,
    pairwise_loss,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    sequence_logprob,
    token_nll,
)


def close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual.float(), torch.tensor(expected), atol=1e-5, rtol=1e-5)


X = torch.tensor([[2.0, 4.0, 99.0], [6.0, -50.0, -50.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_stats_ignore_padding():
    assert masked_mean(X, MASK).item() == pytest.approx(4.0)
    assert masked_var(X, MASK).item() == pytest.approx(4.0)  # unbiased over 2, 4, 6
    assert masked_var(X, MASK, unbiased=False).item() == pytest.approx(8 / 3)
    assert masked_mean(X, MASK, dim=1).tolist() == pytest.approx([3.0, 6.0])


def test_whitening_shift_and_scale_only():
    white = masked_whiten(X, MASK)
    close(white, [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    scaled = masked_whiten(X, MASK, shift_mean=False)
    close(scaled, [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])


def test_pairwise_losses_by_hand():
    c, r = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0])
    bt = -0.5 * (math.log(1 / (1 + math.exp(-1))) + math.log(0.5))
    assert pairwise_loss(c, r).item() == pytest.approx(bt)
    with_margin = pairwise_loss(c, r, torch.tensor([1.0, 0.0])).item()
    assert with_margin == pytest.approx(0.5 * (math.log(2) + math.log(2)))
    assert pairwise_loss(c, r, kind="hinge", hinge_margin=1.0).item() == pytest.approx(0.5 * (0 + 1))
    assert pairwise_loss(torch.tensor([0.3]), torch.tensor([0.0]), kind="hinge").item() == pytest.approx(0.7)
    centred = pairwise_loss(c, r, center_coef=0.01).item()
    assert centred == pytest.approx(bt + 0.01 * (1 + 16) / 2)
    with pytest.raises(ValueError, match="loss"):
        pairwise_loss(c, r, kind="nope")


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(-0.5 + math.log(2))
    assert kl_penalty(ref, logp, "abs").item() == pytest.approx(math.log(2))


def test_per_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    rewards = per_token_rewards(torch.tensor([1.0, -1.0]), kl, mask, beta=0.1)
    close(rewards, [[-0.01, -0.02, 1 - 0.03], [-1 - 0.05, 0.0, 0.0]])


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    close(adv, [[0.45125, 0.475, 0.5]])
    close(ret, [[0.95125, 0.975, 1.0]])


def gae_reference(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """Textbook GAE for one episode, as a plain loop over time."""
    n = len(rewards)
    out = []
    for t in range(n):
        total = 0.0
        for k in range(t, n):
            v_next = values[k + 1] if k + 1 < n else 0.0
            delta = rewards[k] + gamma * v_next - values[k]
            total += (gamma * lam) ** (k - t) * delta
        out.append(total)
    return out


def test_gae_matches_plain_loop_with_ragged_lengths():
    g = torch.Generator().manual_seed(0)
    B, T = 5, 7
    rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    lengths = [7, 1, 4, 6, 3]
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for b, n in enumerate(lengths):
        expected = gae_reference(rewards[b, :n].tolist(), values[b, :n].tolist(), 0.9, 0.8)
        assert adv[b, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert adv[b, n:].abs().sum() == 0 and ret[b, n:].abs().sum() == 0
        assert ret[b, :n].tolist() == pytest.approx((adv[b, :n] + values[b, :n]).tolist(), abs=1e-5)


def test_leave_one_out_advantages_by_hand():
    # Two prompts, three responses each: the baseline is the mean of the other two.
    out = leave_one_out_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0]), group=3)
    close(out, [1 - 2.5, 2 - 2.0, 3 - 1.5, 0.0, 0.0, 0.0])
    close(leave_one_out_advantages(torch.tensor([4.0, 0.0]), group=2), [4.0, -4.0])
    for returns, group in ((torch.ones(5), 2), (torch.ones(4), 1)):
        with pytest.raises(ValueError, match="groups of"):
            leave_one_out_advantages(returns, group)


def test_ppo_policy_loss_clips_by_hand():
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(1.5), math.log(1.5)]])
    adv = torch.tensor([[1.0, -1.0]])
    loss, stats = ppo_policy_loss(new, old, adv, torch.ones(1, 2), clip=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: max(1.5, 1.2) = 1.5 (not clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert stats["clip_frac"] == pytest.approx(0.5)
    assert stats["ratio"] == pytest.approx(1.5)
    same, stats = ppo_policy_loss(old, old, adv, torch.ones(1, 2))
    assert same.item() == pytest.approx(0.0) and stats["approx_kl"] == 0.0


def test_ppo_value_loss_clips_by_hand():
    values, old, returns = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    loss, _ = ppo_value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 1: max((1-2)^2, (0.2-2)^2) = 3.24; token 2: max(0.01, 0.01) = 0.01
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.01) / 2)


def test_dpo_loss_by_hand():
    loss, cr, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
                            torch.tensor([-1.5]), beta=0.1)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1))))
    assert cr.item() == pytest.approx(0.05) and rr.item() == pytest.approx(-0.05)



def test_ipo_loss_uses_the_per_token_mean_log_ratio():
    # Chosen: summed log-ratio 0.5 over 2 tokens; rejected: -0.5 over 4 tokens.
    ipo, cr, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
                           torch.tensor([-1.5]), beta=0.1, kind="ipo", chosen_tokens=torch.tensor([2.0]),
                           rejected_tokens=torch.tensor([4.0]))
    assert ipo.item() == pytest.approx((0.25 + 0.125 - 1 / (2 * 0.1)) ** 2)
    assert cr.item() == pytest.approx(0.025) and rr.item() == pytest.approx(-0.0125)
    with pytest.raises(ValueError, match="ipo loss needs"):
        dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]),
                 beta=0.1, kind="ipo")


def test_token_losses_on_uniform_logits():
    V = 8
    logits = torch.zeros(2, 4, V)
    labels = torch.tensor([[-100, -100, 3, 4], [-100, 1, 2, -100]])
    assert token_nll(logits, labels).item() == pytest.approx(math.log(V))
    assert sequence_logprob(logits, labels).tolist() == pytest.approx([-2 * math.log(V), -2 * math.log(V)])
    assert entropy_from_logits(logits).mean().item() == pytest.approx(math.log(V))
