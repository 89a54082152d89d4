"""SFT stage: next-token loss on the response tokens of demonstrations (prompt tokens masked),
formatted with the model's chat template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rlhf.callbacks import OnStage, stage_begins
from rlhf.checkpoints import check_new_output, data_summary
from rlhf.data import Encoded, collate_sft, encode_pair_side, split_eval, split_messages
from rlhf.distributed import World, single
from rlhf.models import autocast, labelled_token_logits
from rlhf.stage import cancelled_result, stage_save, stage_start
from rlhf.training import OnStep, ShouldStop, StageResult, TrainConfig, final_metrics, supervised_loop


@dataclass
class SFTConfig(TrainConfig):
    learning_rate: float = 2e-5  # small: demonstrations are few and the base is already instructed
    epochs: int = 2  # a couple of passes; more overfits a few hundred demonstrations


def encode_sft(tokenizer: Any, record: dict, config: SFTConfig) -> Encoded:
    prompt, response = split_messages(record)
    return encode_pair_side(tokenizer, prompt, response, config.max_length, config.wrap_plain_prompts)


def sft_loss(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """Mean next-token loss over the response tokens; logits only where there is a label."""
    logits, targets, _rows = labelled_token_logits(model, batch["input_ids"].to(device),
                                                   batch["attention_mask"].to(device), batch["labels"].to(device))
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def evaluate_sft(model: Any, examples: list[Encoded], pad_id: int, config: SFTConfig, device: torch.device,
                 world: World | None = None) -> dict[str, float]:
    """Mean next-token loss over every held-out response token (the examples split across ranks)."""
    if not examples:
        return {}

    def per_example(items: list[Encoded]) -> torch.Tensor:  # [n, 2]: summed token loss, tokens
        out = []
        for i in range(0, len(items), config.batch_size):
            batch = collate_sft(items[i:i + config.batch_size], pad_id)
            with autocast(device, config.precision):
                logits, targets, rows = labelled_token_logits(
                    model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                    batch["labels"].to(device))
            losses = F.cross_entropy(logits.float(), targets, reduction="none")
            n = batch["input_ids"].size(0)
            sums = torch.zeros(n, device=losses.device).index_add(0, rows, losses)
            counts = torch.zeros(n, device=losses.device).index_add(0, rows, torch.ones_like(losses))
            out.append(torch.stack([sums, counts], dim=-1).cpu())
        return torch.cat(out)

    rows = (world or single()).map_shards(examples, per_example)
    return {"eval_loss": float(rows[:, 0].sum() / rows[:, 1].sum().clamp(min=1))}


def train_sft(config: SFTConfig, data: list[dict], base: str | Path, out_dir: str | Path,
              on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
              on_stage: OnStage | None = None) -> StageResult:
    """Fine-tune `base` on demonstrations [{"prompt", "response"} | {"messages"}] and save to out_dir."""
    check_new_output(out_dir)
    stage = stage_start(config, base)
    model, device = stage.model, stage.device
    train_records, held_records = split_eval(data, config.eval_fraction, config.seed)
    train = [encode_sft(stage.tokenizer, r, config) for r in train_records]
    held = [encode_sft(stage.tokenizer, r, config) for r in held_records]
    pad = stage.pad_id

    def step(trained: Any, idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate_sft([train[i] for i in idx], pad)
        return sft_loss(trained, batch, device), {"tokens": int(batch["attention_mask"].sum()),
                                                  "response_tokens": int((batch["labels"] != -100).sum()),
                                                  "loss_units": int((batch["labels"][:, 1:] != -100).sum())}

    outcome = supervised_loop(config, stage.params, len(train), step, device=device,
                              eval_fn=lambda m: evaluate_sft(m, held, pad, config, device, stage.world),
                              on_step=on_step, should_stop=should_stop, model=model, out_dir=out_dir,
                              on_stage=on_stage, world=stage.world)
    if outcome.cancelled:
        return cancelled_result(outcome)
    stage_begins(on_stage, "saving")
    return stage_save(stage, outcome, out_dir, name="sft", metrics=final_metrics(outcome),
                      summary=data_summary(data, train=len(train), eval=len(held)))
