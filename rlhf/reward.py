"""Reward model stage: a scalar head on a transformer trained on preference pairs, evaluated by
held-out pairwise accuracy, saved with its score mean/std for PPO's normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.callbacks import OnStage, stage_begins
from rlhf.checkpoints import check_new_output, data_summary, save_model_dir
from rlhf.data import EncodedPair, collate_pairs, encode_pair, split_eval
from rlhf.lora import apply_lora, lora_options
from rlhf.losses import pairwise_loss
from rlhf.models import REWARD_STATS_FILE, autocast, load_reward_model, resolve_device, sequence_scores
from rlhf.training import (
    OnStep,
    ShouldStop,
    StageResult,
    TrainConfig,
    final_metrics,
    out_path,
    seed_everything,
    supervised_loop,
)
from rlhf.validation import require_valid


@dataclass
class RewardConfig(TrainConfig):
    learning_rate: float = 1e-5  # the checklist's usual RM rate for a pretrained backbone
    epochs: int = 1  # one epoch: labels are scarce and a reward model overfits quickly
    loss: str = "bradley_terry"  # bradley_terry (-log sigmoid(r_c - r_r - margin)) | hinge
    use_margin: bool = True  # subtract the pairs' "margin" field inside the loss
    hinge_margin: float = 1.0  # margin m of the hinge loss when a pair has none
    center_coef: float = 0.0  # 0.01 keeps scores centred at 0 (optional per the checklist)
    eval_batch_size: int = 16  # pairs per forward pass during evaluation


def pair_scores(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen [B], rejected [B]) scores of a collated pair batch."""
    scores = sequence_scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
    half = scores.size(0) // 2
    return scores[:half], scores[half:]


@torch.no_grad()
def evaluate_pairs(model: Any, pairs: list[EncodedPair], pad_id: int, config: RewardConfig,
                   device: torch.device) -> dict[str, float]:
    """Held-out pairwise accuracy (ties count half), mean margin and reward statistics."""
    if not pairs:
        return {}
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for i in range(0, len(pairs), config.eval_batch_size):
        batch = collate_pairs(pairs[i:i + config.eval_batch_size], pad_id)
        with autocast(device, config.precision):
            c, r = pair_scores(model, batch, device)
        chosen.append(c.float())
        rejected.append(r.float())
    model.train(was_training)
    c, r = torch.cat(chosen), torch.cat(rejected)
    both = torch.cat([c, r])
    accuracy = ((c > r).float() + 0.5 * (c == r).float()).mean()
    return {"eval_accuracy": accuracy.item(), "eval_margin": (c - r).mean().item(),
            "eval_reward_mean": both.mean().item(), "eval_reward_std": both.std().item() if both.numel() > 1 else 0.0,
            "eval_reward_min": both.min().item(), "eval_reward_max": both.max().item(), "eval_pairs": len(pairs)}


def train_reward_model(config: RewardConfig, pairs: list[dict], base: str | Path, out_dir: str | Path,
                       on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
                       eval_pairs: list[dict] | None = None, on_stage: OnStage | None = None) -> StageResult:
    """Train a reward model on pairs [{"prompt", "chosen", "rejected", "margin"?}] from `base` (a causal
    LM directory, e.g. the SFT model, or an earlier reward model) and save it to out_dir.

    eval_pairs, when given, replace the random held-out split.
    """
    require_valid(config)
    check_new_output(out_dir)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    rm = load_reward_model(base, device=str(device), eval_mode=False)
    model, tokenizer = rm.model, rm.tokenizer
    lora = lora_options(config.lora)
    if lora is not None:
        model = apply_lora(model, lora, task="seq_cls")
    train_records, held_out = (pairs, eval_pairs) if eval_pairs is not None else split_eval(
        pairs, config.eval_fraction, config.seed)
    train = [encode_pair(tokenizer, p, config.max_length, config.wrap_plain_prompts) for p in train_records]
    held = [encode_pair(tokenizer, p, config.max_length, config.wrap_plain_prompts) for p in held_out]
    pad = tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate_pairs([train[i] for i in idx], pad)
        c, r = pair_scores(model, batch, device)
        margin = batch["margin"].to(device) if config.use_margin else None
        loss = pairwise_loss(c.float(), r.float(), margin, config.loss, config.hinge_margin, config.center_coef)
        return loss, {"accuracy": (c > r).float().mean().item(), "margin": (c - r).mean().item(),
                      "tokens": int(batch["attention_mask"].sum())}

    outcome = supervised_loop(config, params, len(train), step, device=device,
                              eval_fn=lambda: evaluate_pairs(model, held, pad, config, device),
                              on_step=on_step, should_stop=should_stop, model=model, out_dir=out_dir,
                              on_stage=on_stage)
    if outcome.cancelled:
        return StageResult(None, final_metrics(outcome), outcome.history, cancelled=True)
    # Score statistics over the training pairs: PPO divides by them so rewards start at unit scale.
    stage_begins(on_stage, "saving")
    stats_eval = evaluate_pairs(model, train[:256], pad, config, device)
    stats = {"mean": stats_eval["eval_reward_mean"], "std": max(stats_eval["eval_reward_std"], 1e-6)}
    metrics = {**final_metrics(outcome), "score_mean": stats["mean"], "score_std": stats["std"]}
    saved = save_model_dir(model, tokenizer, out_path(out_dir), stage="reward_model", config=config,
                           metrics=metrics, base=str(base), extra_json={REWARD_STATS_FILE: stats},
                           summary=data_summary(pairs, train=len(train), eval=len(held)),
                           merge_lora=lora.merge if lora else True)
    return StageResult(str(saved), metrics, outcome.history)
