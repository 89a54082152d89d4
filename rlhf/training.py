"""What SFT, the reward model and DPO share: the base config, the result type, the optimizer and
schedule, and the step loop with progress callbacks and cancellation.

Why our own loop and not TRL's SFT/Reward/DPO trainers: the service needs a callback after every
step, cancellation between steps, the exact same prompt formatting and PAD handling as PPO (which
TRL no longer has), and one checkpoint layout for every stage. A ~100-line loop over shared data and
loss code gives all of that; bench/train_throughput.py runs TRL's trainers on the same work as the
yardstick. Why plain torch and not accelerate's Accelerator: its process-wide state fixes the
precision once per process, while one worker runs stages with different settings one after another.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.callbacks import OnStage, OnStep, ShouldStop, StopRequested, stage_begins
from rlhf.checkpoints import (
    load_trainable_state,
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
    trainable_state,
)
from rlhf.data import batches
from rlhf.lora import LoraOptions
from rlhf.models import autocast

__all__ = ["OnStep", "ShouldStop", "StopRequested", "StageResult", "TrainConfig", "supervised_loop"]


@dataclass
class OptimConfig:
    """What every stage, PPO included, sets the same way: the optimizer, lengths, seed, precision,
    prompt formatting and LoRA."""

    learning_rate: float = 1e-5  # peak learning rate (AdamW)
    warmup_ratio: float = 0.0  # fraction of steps with linearly rising LR, then linear decay to 0
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_eps: float = 1e-8  # AdamW epsilon
    max_grad_norm: float = 1.0  # gradient clipping by global norm (0 disables)
    max_length: int = 512  # tokens of prompt + response; prompts are cut from the left first
    seed: int = 0  # seeds shuffling, head init and sampling
    precision: str = "bf16"  # bf16 | fp16 | fp32 autocast for forward passes; weights stay fp32
    device: str | None = None  # torch device; None picks cuda when available, else cpu
    wrap_plain_prompts: bool = True  # plain-string prompts become a user turn of the chat template
    lora: LoraOptions | dict | None = None  # train a LoRA adapter instead of all weights
    save_every: int = 50  # optimizer steps between resumable states (0: only when cancelled)


@dataclass
class TrainConfig(OptimConfig):
    """The supervised stages (SFT, reward model, DPO): epochs of shuffled batches."""

    epochs: int = 1  # passes over the training data
    batch_size: int = 8  # examples (or pairs) per optimizer step
    max_steps: int | None = None  # stop after this many steps even mid-epoch (None: run all epochs)
    eval_fraction: float = 0.1  # share of the prompts held out for evaluation (0: none)
    eval_every: int = 0  # evaluate every N steps (0: only at the end)


@dataclass
class StageResult:
    """What a stage returns. Cancellation is a result, not an exception: a cancelled stage returns
    cancelled=True with the history so far and writes no model (PPO keeps its resumable state)."""

    out_dir: str | None  # the saved HF directory; None when cancelled
    metrics: dict[str, Any]  # final metrics (also in metrics.json beside the model)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per step, as on_step got it
    cancelled: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(params: list[torch.nn.Parameter], config: OptimConfig, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warmup then linear decay to 0 over total_steps.

    Fused AdamW: one kernel over all parameters instead of a chain of per-tensor ops, measured
    ~6x faster per step on 135M parameters on one CPU thread (1.15 s -> 0.19 s) and the usual
    choice on GPUs; the math is the same.
    """
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, eps=config.adam_eps,
                                  weight_decay=config.weight_decay, fused=_fused_supported(params))
    warmup = int(total_steps * config.warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _fused_supported(params: list[torch.nn.Parameter]) -> bool:
    # Fused kernels need floating-point parameters on one CPU or CUDA device.
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def optimizer_step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                   scheduler: Any, max_grad_norm: float) -> float:
    """Backward, clip, step; returns the gradient norm before clipping."""
    loss.backward()
    if max_grad_norm > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    else:
        norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


@dataclass
class LoopOutcome:
    history: list[dict[str, Any]]
    cancelled: bool
    last_eval: dict[str, Any]


def total_steps_for(config: TrainConfig, n_examples: int) -> int:
    per_epoch = math.ceil(n_examples / config.batch_size)
    total = per_epoch * config.epochs
    return min(total, config.max_steps) if config.max_steps else total


def supervised_loop(config: TrainConfig, params: list[torch.nn.Parameter], n_examples: int,
                    step_fn: Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]], *,
                    device: torch.device, eval_fn: Callable[[], dict[str, Any]] | None = None,
                    on_step: OnStep | None = None, should_stop: ShouldStop | None = None,
                    model: torch.nn.Module | None = None, out_dir: str | Path | None = None,
                    on_stage: OnStage | None = None) -> LoopOutcome:
    """Run epochs of shuffled batches through step_fn(indices) -> (loss, metrics with "tokens").

    Each step's metrics go to on_step; should_stop is asked before every step. With `model` and
    `out_dir`, the loop is resumable: every `config.save_every` steps and when stopped it saves the
    model's trainable weights, optimizer, schedule, RNG states and data position beside out_dir,
    and a later call with the same arguments continues from there, step for step as if it had
    never stopped.
    """
    if n_examples == 0:
        raise ValueError("no training examples")
    total = total_steps_for(config, n_examples)
    if total < 1:
        raise ValueError(f"the config trains zero steps (epochs={config.epochs}, max_steps={config.max_steps})")
    optimizer, scheduler = make_optimizer(params, config, total)
    rng = random.Random(config.seed)
    history: list[dict[str, Any]] = []
    last_eval: dict[str, Any] = {}
    step, start = 0, time.perf_counter()
    start_epoch, skip = 0, 0
    resumable = model is not None and out_dir is not None
    state = load_training_state(out_dir) if resumable else None
    if state is not None:
        load_trainable_state(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        rng.setstate(state["epoch_rng"])
        start_epoch, skip, step = state["epoch"], state["batch"], state["step"]
        history, last_eval = state["history"], state["last_eval"]

    def save(epoch: int, batch: int, epoch_rng: Any) -> None:
        if resumable:
            save_training_state(out_dir, {
                "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch_rng": epoch_rng,
                "epoch": epoch, "batch": batch, "step": step, "history": history, "last_eval": last_eval})

    stage_begins(on_stage, "training")
    for epoch in range(start_epoch, config.epochs):
        epoch_rng = rng.getstate()  # the order of this epoch is drawn from here, on resume too
        for b, idx in enumerate(batches(n_examples, config.batch_size, rng)):
            if epoch == start_epoch and b < skip:
                continue
            if step >= total:
                break
            if should_stop is not None and should_stop():
                save(epoch, b, epoch_rng)
                return LoopOutcome(history, True, last_eval)
            t0 = time.perf_counter()
            with autocast(device, config.precision):
                loss, metrics = step_fn(idx)
            grad_norm = optimizer_step(loss, params, optimizer, scheduler, config.max_grad_norm)
            step += 1
            elapsed = time.perf_counter() - t0
            record = {"step": step, "total_steps": total, "epoch": epoch,
                      "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                      "step_time_s": elapsed, "elapsed_s": time.perf_counter() - start, **metrics}
            record["tokens_per_s"] = metrics.get("tokens", 0) / max(elapsed, 1e-9)
            if eval_fn is not None and config.eval_every and step % config.eval_every == 0 and step < total:
                stage_begins(on_stage, "evaluating")
                last_eval = eval_fn()
                record.update(last_eval)
                stage_begins(on_stage, "training")
            history.append(record)
            if on_step is not None:
                on_step(dict(record))
            if config.save_every and step % config.save_every == 0 and step < total:
                save(epoch, b + 1, epoch_rng)
    if not history:
        raise ValueError("no optimizer step was taken: nothing to save")
    if eval_fn is not None:
        stage_begins(on_stage, "evaluating")
        last_eval = eval_fn()
    return LoopOutcome(history, False, last_eval)


def final_metrics(outcome: LoopOutcome) -> dict[str, Any]:
    """The last step's training metrics plus the final evaluation."""
    last = dict(outcome.history[-1]) if outcome.history else {}
    return {**last, **outcome.last_eval}


def out_path(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
