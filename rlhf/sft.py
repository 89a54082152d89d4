"""SFT stage: next-token loss on the response tokens of demonstrations (prompt tokens masked),
formatted with the model's chat template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.callbacks import OnStage, stage_begins
from rlhf.checkpoints import check_new_output, data_summary, save_model_dir
from rlhf.data import Encoded, collate_sft, encode_pair_side, split_eval, split_messages
from rlhf.lora import apply_lora, lora_options
from rlhf.losses import token_nll
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
class SFTConfig(TrainConfig):
    learning_rate: float = 2e-5  # small: demonstrations are few and the base is already instructed
    epochs: int = 2  # a couple of passes; more overfits a few hundred demonstrations


def encode_sft(tokenizer: Any, record: dict, config: SFTConfig) -> Encoded:
    prompt, response = split_messages(record)
    return encode_pair_side(tokenizer, prompt, response, config.max_length, config.wrap_plain_prompts)


def sft_loss(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    mask = batch["attention_mask"].to(device)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                   position_ids=positions_from_mask(mask)).logits
    return token_nll(logits, batch["labels"].to(device))


@torch.no_grad()
def evaluate_sft(model: Any, examples: list[Encoded], pad_id: int, config: SFTConfig, device: torch.device
                 ) -> dict[str, float]:
    if not examples:
        return {}
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), config.batch_size):
        batch = collate_sft(examples[i:i + config.batch_size], pad_id)
        n = int((batch["labels"][:, 1:] != -100).sum())
        with autocast(device, config.precision):
            total += float(sft_loss(model, batch, device)) * n
        count += n
    model.train(was_training)
    return {"eval_loss": total / max(count, 1)}


def train_sft(config: SFTConfig, data: list[dict], base: str | Path, out_dir: str | Path,
              on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
              on_stage: OnStage | None = None) -> StageResult:
    """Fine-tune `base` on demonstrations [{"prompt", "response"} | {"messages"}] and save to out_dir."""
    require_valid(config)
    check_new_output(out_dir)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model, tokenizer = load_policy(base, device=str(device), eval_mode=False)
    lora = lora_options(config.lora)
    if lora is not None:
        model = apply_lora(model, lora)
    train_records, held_records = split_eval(data, config.eval_fraction, config.seed)
    train = [encode_sft(tokenizer, r, config) for r in train_records]
    held = [encode_sft(tokenizer, r, config) for r in held_records]
    pad = tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate_sft([train[i] for i in idx], pad)
        return sft_loss(model, batch, device), {"tokens": int(batch["attention_mask"].sum()),
                                                "response_tokens": int((batch["labels"] != -100).sum())}

    outcome = supervised_loop(config, params, len(train), step, device=device,
                              eval_fn=lambda: evaluate_sft(model, held, pad, config, device),
                              on_step=on_step, should_stop=should_stop, model=model, out_dir=out_dir,
                              on_stage=on_stage)
    metrics = final_metrics(outcome)
    if outcome.cancelled:
        return StageResult(None, metrics, outcome.history, cancelled=True)
    stage_begins(on_stage, "saving")
    saved = save_model_dir(model, tokenizer, out_path(out_dir), stage="sft", config=config, metrics=metrics,
                           base=str(base), summary=data_summary(data, train=len(train), eval=len(held)),
                           merge_lora=lora.merge if lora else True)
    return StageResult(str(saved), metrics, outcome.history)
