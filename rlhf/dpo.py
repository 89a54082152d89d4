"""DPO stage: trains the policy directly on preference pairs against a frozen reference, the cheaper
alternative to reward model + PPO."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.callbacks import OnStage, stage_begins
from rlhf.checkpoints import check_new_output, data_summary, save_model_dir
from rlhf.data import EncodedPair, collate_pairs, encode_pair, split_eval
from rlhf.lora import apply_lora, lora_options
from rlhf.losses import dpo_loss, sequence_logprob
from rlhf.models import autocast, load_policy, resolve_device
from rlhf.sampling import positions_from_mask
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
class DPOConfig(TrainConfig):
    learning_rate: float = 5e-7  # DPO's usual rate for full fine-tuning; it drifts fast above 1e-6
    beta: float = 0.1  # strength of the implicit KL constraint to the reference
    loss: str = "sigmoid"  # sigmoid (DPO paper) | ipo
    label_smoothing: float = 0.0  # conservative DPO: assumed share of flipped labels
    eval_batch_size: int = 8  # pairs per forward pass when computing reference log-probs and eval


def pair_logprobs(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (chosen [B], rejected [B]) of a collated pair batch."""
    mask = batch["attention_mask"].to(device)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                   position_ids=positions_from_mask(mask)).logits
    logp = sequence_logprob(logits, batch["labels"].to(device))
    half = logp.size(0) // 2
    return logp[:half], logp[half:]


@torch.no_grad()
def all_pair_logprobs(model: Any, pairs: list[EncodedPair], pad_id: int, config: DPOConfig, device: torch.device
                      ) -> torch.Tensor:
    """[N, 2] (chosen, rejected) log-probs of every pair, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(pairs), config.eval_batch_size):
        with autocast(device, config.precision):
            c, r = pair_logprobs(model, collate_pairs(pairs[i:i + config.eval_batch_size], pad_id), device)
        out.append(torch.stack([c.float(), r.float()], dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)


def train_dpo(config: DPOConfig, pairs: list[dict], policy: str | Path, out_dir: str | Path,
              on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
              on_stage: OnStage | None = None) -> StageResult:
    """DPO from the `policy` directory (usually the SFT model) on pairs, saved to out_dir."""
    require_valid(config)
    check_new_output(out_dir)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model, tokenizer = load_policy(policy, device=str(device), eval_mode=False)
    lora = lora_options(config.lora)
    if lora is not None:
        model = apply_lora(model, lora)
    train_records, held_records = split_eval(pairs, config.eval_fraction, config.seed)
    train = [encode_pair(tokenizer, p, config.max_length, config.wrap_plain_prompts) for p in train_records]
    held = [encode_pair(tokenizer, p, config.max_length, config.wrap_plain_prompts) for p in held_records]
    pad = tokenizer.pad_token_id
    # The reference is the starting policy, so its log-probs are computed once before any update:
    # no second copy of the weights is kept (with or without LoRA).
    ref_train = all_pair_logprobs(model, train, pad, config, device)
    ref_held = all_pair_logprobs(model, held, pad, config, device)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate_pairs([train[i] for i in idx], pad)
        c, r = pair_logprobs(model, batch, device)
        ref = ref_train[idx].to(device)
        loss, cr, rr = dpo_loss(c, r, ref[:, 0], ref[:, 1], config.beta, config.loss, config.label_smoothing)
        return loss, {"reward_accuracy": (cr > rr).float().mean().item(), "reward_margin": (cr - rr).mean().item(),
                      "chosen_reward": cr.mean().item(), "rejected_reward": rr.mean().item(),
                      "tokens": int(batch["attention_mask"].sum())}

    def evaluate() -> dict[str, float]:
        if not held:
            return {}
        now = all_pair_logprobs(model, held, pad, config, device)
        loss, cr, rr = dpo_loss(now[:, 0], now[:, 1], ref_held[:, 0], ref_held[:, 1], config.beta, config.loss,
                                config.label_smoothing)
        return {"eval_loss": loss.item(), "eval_accuracy": (cr > rr).float().mean().item(),
                "eval_margin": (cr - rr).mean().item()}

    outcome = supervised_loop(config, params, len(train), step, device=device, eval_fn=evaluate,
                              on_step=on_step, should_stop=should_stop, model=model, out_dir=out_dir,
                              on_stage=on_stage)
    metrics = final_metrics(outcome)
    if outcome.cancelled:
        return StageResult(None, metrics, outcome.history, cancelled=True)
    stage_begins(on_stage, "saving")
    saved = save_model_dir(model, tokenizer, out_path(out_dir), stage="dpo", config=config, metrics=metrics,
                           base=str(policy), summary=data_summary(pairs, train=len(train), eval=len(held)),
                           merge_lora=lora.merge if lora else True)
    return StageResult(str(saved), metrics, outcome.history)
