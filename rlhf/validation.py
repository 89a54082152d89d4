"""The allowed values of config fields, in one table for every stage's config (a field means the same
wherever it appears: `learning_rate` of SFT and of PPO share a rule). The job launcher, the CLI and
every `train_*` function check a config with it before any work, so a run that cannot do anything
(zero epochs, a negative learning rate, an unknown loss) is refused up front, naming the field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BIG = 10**12


@dataclass(frozen=True)
class Rule:
    low: float | None = None  # smallest allowed value
    high: float | None = None  # largest allowed value
    low_open: bool = False  # the low end itself is not allowed (a rate must be > 0)
    choices: tuple[str, ...] | None = None  # for text fields
    optional: bool = False  # None is allowed ("off")

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        high = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(x for x in (low, high) if x) + (" (or null)" if self.optional else "")

    def error(self, value: Any) -> str | None:
        if value is None:
            return None if self.optional else "must not be null"
        if self.choices is not None:
            return None if value in self.choices else f"must be {self.describe()}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None  # types are the caller's check
        if value != value or value in (float("inf"), float("-inf")):
            return f"must be a finite number, got {value!r}"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"must be {self.describe()}, got {value!r}"
        if self.high is not None and value > self.high:
            return f"must be {self.describe()}, got {value!r}"
        return None


RATE = Rule(0, 1, low_open=True)
COUNT = Rule(1, 1_000_000)
FRACTION = Rule(0, 1)
# Keyed by field name; "Class.field" overrides for a field whose meaning differs by stage.
RULES: dict[str, Rule] = {
    "learning_rate": RATE,
    "epochs": Rule(1, 10_000),
    "batch_size": Rule(1, 4096),
    "eval_batch_size": Rule(1, 4096),
    "mini_batch_size": Rule(1, 4096),
    "rollout_batch_size": Rule(1, 4096),
    "max_steps": Rule(1, BIG, optional=True),
    "max_length": Rule(8, 131_072),
    "max_new_tokens": Rule(1, 32_768),
    "warmup_ratio": FRACTION,
    "weight_decay": Rule(0, 10),
    "adam_eps": Rule(0, 1, low_open=True),
    "max_grad_norm": Rule(0, 1e6),
    "eval_fraction": Rule(0, 0.9),
    "eval_every": Rule(0, BIG),
    "save_every": Rule(0, BIG),
    "seed": Rule(0, 2**63 - 1, optional=True),
    "precision": Rule(choices=("fp32", "bf16", "fp16")),
    "iterations": COUNT,
    "ppo_epochs": Rule(1, 100),
    "kl_coef": Rule(0, 100),
    "kl_target": Rule(0, 1e6, low_open=True, optional=True),
    "kl_horizon": Rule(1, BIG),
    "kl_estimator": Rule(choices=("k1", "k3", "abs")),
    "gamma": FRACTION,
    "lam": FRACTION,
    "cliprange": Rule(0, 10, low_open=True),
    "cliprange_value": Rule(0, 1e6, low_open=True),
    "vf_coef": Rule(0, 100),
    "missing_eos_penalty": Rule(-1e6, 1e6, optional=True),
    "critic": Rule(choices=("head", "reward_model")),
    "sample_responses": Rule(0, 64),
    "kl_alarm": Rule(0, 1e6, low_open=True),
    "temperature": Rule(0, 100, low_open=True),
    "top_k": Rule(1, 10**7),
    "top_p": Rule(0, 1, low_open=True),
    "strategy": Rule(choices=("greedy", "multinomial", "top_k", "top_p")),
    "beta": Rule(0, 100, low_open=True),
    "label_smoothing": Rule(0, 0.5),
    "hinge_margin": Rule(0, 1e6),
    "center_coef": Rule(0, 100),
    "RewardConfig.loss": Rule(choices=("bradley_terry", "hinge")),
    "DPOConfig.loss": Rule(choices=("sigmoid", "ipo")),
    "r": Rule(1, 4096),
    "alpha": Rule(0, 1e6, low_open=True),
    "dropout": Rule(0, 0.99),
}


def rule_for(config_class: type, name: str) -> Rule | None:
    for cls in config_class.__mro__:
        if f"{cls.__name__}.{name}" in RULES:
            return RULES[f"{cls.__name__}.{name}"]
    return RULES.get(name)


def _nested(name: str, value: Any) -> Any:
    """Nested option groups arrive as plain dicts from JSON: the sampling and LoRA options."""
    if not isinstance(value, dict):
        return value
    if name == "sampling":
        from rlhf.sampling import SamplingConfig

        return SamplingConfig(**value)
    if name == "lora":
        from rlhf.lora import LoraOptions

        return LoraOptions(**value)
    return value


def config_errors(config: Any, prefix: str = "") -> dict[str, str]:
    """{field: what is wrong} for every field of a config dataclass (nested ones as "sampling.top_p")
    whose value is out of its range; empty when the config is usable."""
    errors: dict[str, str] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        try:
            value = _nested(f.name, value)
        except TypeError as exc:
            errors[prefix + f.name] = str(exc)
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            errors.update(config_errors(value, prefix=f"{prefix}{f.name}."))
            continue
        rule = rule_for(type(config), f.name)
        message = rule.error(value) if rule is not None else None
        if message:
            errors[prefix + f.name] = message
    return errors


def require_valid(config: Any) -> None:
    """Raise ValueError naming every field out of range (a stage calls this before any work)."""
    errors = config_errors(config)
    if errors:
        raise ValueError("invalid " + type(config).__name__ + ": "
                         + "; ".join(f"{k} {v}" for k, v in errors.items()))
