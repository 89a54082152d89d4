"""LoRA through peft, an option of every stage: the adapter trains, the base stays frozen, and the
result is merged into plain weights on request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoraOptions:
    r: int = 16  # adapter rank
    alpha: int = 32  # scaling numerator; effective scale alpha / r
    dropout: float = 0.0  # 0 by default: RL stages need dropout off (log-probs must be reproducible)
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")  # peft's selector
    merge: bool = True  # save merged weights (a plain HF model) rather than the adapter alone


def lora_options(value: LoraOptions | dict | None) -> LoraOptions | None:
    """Accept options as a dataclass or a plain dict (as a JSON job config gives them)."""
    if value is None or isinstance(value, LoraOptions):
        return value
    return LoraOptions(**value)


def apply_lora(model: Any, options: LoraOptions, task: str = "causal_lm") -> Any:
    """Wrap `model` with a fresh LoRA adapter. peft is the maintained implementation (used by TRL and
    most fine-tuning stacks); writing our own adapter layers would buy nothing.

    task "seq_cls" also trains the reward head in full (it is new, so it cannot stay frozen).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=options.target_modules,
        task_type=TaskType.SEQ_CLS if task == "seq_cls" else TaskType.CAUSAL_LM,
        modules_to_save=["score"] if task == "seq_cls" else None,
    )
    return get_peft_model(model, config)


def is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")
