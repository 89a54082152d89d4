"""What the supervised stages (SFT, reward model, DPO) share around their step function: loading the
starting model with dropout off, LoRA, and saving the result or reporting a cancellation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.checkpoints import save_model_dir
from rlhf.distributed import World, world_for
from rlhf.lora import LoraOptions, apply_lora, lora_options
from rlhf.models import load_policy, load_reward_model
from rlhf.training import LoopOutcome, OptimConfig, StageResult, final_metrics, out_path, seed_everything
from rlhf.validation import require_valid


@dataclass
class Stage:
    config: OptimConfig
    base: str  # the directory the model was loaded from
    model: Any  # the model being trained (a peft wrapper under LoRA)
    tokenizer: Any
    device: torch.device
    lora: LoraOptions | None
    world: World

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def disable_dropout(model: Any) -> Any:
    """Dropout off for training too: with a few hundred examples it only adds noise, and it would
    make the log-probs of the same text differ between two passes (DPO's reference, PPO's ratio).
    Eval mode turns off the attention dropout HF applies functionally; p = 0 covers any module a
    later train() call would switch back on."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def stage_start(config: OptimConfig, base: str | Path, *, head: str = "lm") -> Stage:
    """Seed, load `base` as a causal LM (head "lm") or a scalar-score model (head "score"), dropout
    off, LoRA on when configured. A config out of range is refused here, before any work."""
    require_valid(config)
    seed_everything(config.seed)  # the same on every rank while the model is built
    world = world_for(config.device, config.precision)
    device = world.device
    if head == "score":
        rm = load_reward_model(base, device=str(device))
        model, tokenizer = rm.model, rm.tokenizer
    elif head == "lm":
        model, tokenizer = load_policy(base, device=str(device))
    else:
        raise ValueError(f"head must be 'lm' or 'score', got {head!r}")
    lora = lora_options(config.lora)
    if lora is not None:
        model = apply_lora(model, lora, task="seq_cls" if head == "score" else "causal_lm")
    return Stage(config, str(base), disable_dropout(model), tokenizer, device, lora, world)


def cancelled_result(outcome: LoopOutcome) -> StageResult:
    return StageResult(None, final_metrics(outcome), outcome.history, cancelled=True)


def stage_save(stage: Stage, outcome: LoopOutcome, out_dir: str | Path, *, name: str, summary: dict[str, Any],
               metrics: dict[str, Any] | None = None, extra_json: dict[str, Any] | None = None) -> StageResult:
    """Save the trained model as a HF directory (merged unless LoRA says otherwise), on rank 0 only;
    the metadata says how many processes took part and how many samples they saw."""
    world = outcome.world
    metrics = metrics if metrics is not None else final_metrics(outcome)
    summary = {**summary, **world.describe(), "samples_seen": metrics.get("samples_seen")}
    weights = world.full_state_dict(outcome.trained)  # a collective under FSDP/DeepSpeed: every rank
    if weights is not None:  # the reward model trains inside its SequenceScorer
        weights = {k.removeprefix("scored."): v for k, v in weights.items()}
    if world.is_main:
        save_model_dir(stage.model, stage.tokenizer, out_path(out_dir), stage=name, config=stage.config,
                       metrics=metrics, base=stage.base, summary=summary, extra_json=extra_json,
                       merge_lora=stage.lora.merge if stage.lora else True, state_dict=weights)
    world.barrier()  # the directory exists for every rank once this returns
    return StageResult(str(out_dir), metrics, outcome.history)
