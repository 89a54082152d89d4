"""DPO stage: trains the policy directly on preference pairs against a frozen reference, the cheaper
alternative to reward model + PPO."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.callbacks import OnStage, stage_begins
from rlhf.checkpoints import check_new_output, data_summary
from rlhf.data import EncodedPair, collate_pairs, encode_pairs, split_eval
from rlhf.distributed import World, single
from rlhf.losses import dpo_loss
from rlhf.models import autocast, labelled_token_logits
from rlhf.stage import cancelled_result, stage_save, stage_start
from rlhf.training import OnStep, ShouldStop, StageResult, TrainConfig, final_metrics, supervised_loop


@dataclass
class DPOConfig(TrainConfig):
    learning_rate: float = 5e-7  # DPO's usual rate for full fine-tuning; it drifts fast above 1e-6
    beta: float = 0.1  # strength of the implicit KL constraint to the reference
    loss: str = "sigmoid"  # sigmoid (DPO paper) | ipo (on the per-token mean log-ratio)
    label_smoothing: float = 0.0  # conservative DPO: assumed share of flipped labels
    eval_batch_size: int = 8  # pairs per forward pass when computing reference log-probs and eval


def pair_logprobs(model: Any, batch: dict[str, torch.Tensor], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed response log-probs (chosen [B], rejected [B]) of a collated pair batch and the
    response lengths [2B] (chosen rows first)."""
    logits, targets, rows = labelled_token_logits(model, batch["input_ids"].to(device),
                                                  batch["attention_mask"].to(device), batch["labels"].to(device))
    picked = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)  # [N]
    n_rows = batch["input_ids"].size(0)
    sums = torch.zeros(n_rows, device=picked.device).index_add(0, rows, picked)
    counts = torch.zeros(n_rows, device=picked.device).index_add(0, rows, torch.ones_like(picked))
    half = n_rows // 2
    return sums[:half], sums[half:], counts


@torch.no_grad()
def all_pair_logprobs(model: Any, pairs: list[EncodedPair], pad_id: int, config: DPOConfig, device: torch.device,
                      world: World | None = None) -> torch.Tensor:
    """[N, 4] (chosen, rejected log-probs, chosen, rejected lengths) of every pair, the pairs split
    across ranks and every rank given all rows."""

    def rows(items: list[EncodedPair]) -> torch.Tensor:
        out = []
        for i in range(0, len(items), config.eval_batch_size):
            with autocast(device, config.precision):
                c, r, n = pair_logprobs(model, collate_pairs(items[i:i + config.eval_batch_size], pad_id), device)
            half = n.size(0) // 2
            out.append(torch.stack([c.float(), r.float(), n[:half], n[half:]], dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 4)

    return (world or single()).map_shards(pairs, rows)


def train_dpo(config: DPOConfig, pairs: list[dict], policy: str | Path, out_dir: str | Path,
              on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
              on_stage: OnStage | None = None) -> StageResult:
    """DPO from the `policy` directory (usually the SFT model) on pairs, saved to out_dir; prompts are
    held out whole, and pairs whose responses do not fit max_length with their EOS are dropped."""
    check_new_output(out_dir)
    stage = stage_start(config, policy)
    model, tokenizer, device = stage.model, stage.tokenizer, stage.device
    train_records, held_records = split_eval(pairs, config.eval_fraction, config.seed)
    train, dropped = encode_pairs(tokenizer, train_records, config.max_length, config.wrap_plain_prompts)
    held, dropped_held = encode_pairs(tokenizer, held_records, config.max_length, config.wrap_plain_prompts)
    if not train:
        raise ValueError(f"no training pairs fit max_length={config.max_length} ({dropped} dropped as truncated)")
    pad, world = stage.pad_id, stage.world
    # The reference is the starting policy, so its log-probs are computed once before any update:
    # no second copy of the weights is kept (with or without LoRA). Under FSDP/ZeRO-3 the plain
    # module cannot run before the engine wraps it: there, keep full weights per rank for this pass
    # or precompute elsewhere (README, "Scaling out").
    ref_train = all_pair_logprobs(model, train, pad, config, device, world)
    ref_held = all_pair_logprobs(model, held, pad, config, device, world)

    def losses(now_c, now_r, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return dpo_loss(now_c, now_r, ref[:, 0], ref[:, 1], config.beta, config.loss, config.label_smoothing,
                        chosen_tokens=ref[:, 2], rejected_tokens=ref[:, 3])

    def step(trained: Any, idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate_pairs([train[i] for i in idx], pad)
        c, r, _n = pair_logprobs(trained, batch, device)
        loss, cr, rr = losses(c, r, ref_train[idx].to(device))
        return loss, {"reward_accuracy": (cr > rr).float().mean().item(), "reward_margin": (cr - rr).mean().item(),
                      "chosen_reward": cr.mean().item(), "rejected_reward": rr.mean().item(),
                      "tokens": int(batch["attention_mask"].sum())}

    def evaluate(evaluated: Any) -> dict[str, float]:
        if not held:
            return {}
        now = all_pair_logprobs(evaluated, held, pad, config, device, world)
        loss, cr, rr = losses(now[:, 0], now[:, 1], ref_held)
        return {"eval_loss": loss.item(), "eval_accuracy": (cr > rr).float().mean().item(),
                "eval_margin": (cr - rr).mean().item(), "eval_pairs": len(held)}

    outcome = supervised_loop(config, stage.params, len(train), step, device=device, eval_fn=evaluate,
                              on_step=on_step, should_stop=should_stop, model=model, out_dir=out_dir,
                              on_stage=on_stage, world=world)
    if outcome.cancelled:
        return cancelled_result(outcome)
    stage_begins(on_stage, "saving")
    metrics = {**final_metrics(outcome), "dropped_truncated": dropped + dropped_held}
    return stage_save(stage, outcome, out_dir, name="dpo", metrics=metrics,
                      summary=data_summary(pairs, train=len(train), eval=len(held)))
