"""The allowed values of config fields, in one table for every stage's config (a field means the same
wherever it appears: `learning_rate` of SFT and of PPO share a rule). The job launcher, the CLI and
every `train_*` function check a config with it before any work, so a run that cannot do anything
(zero epochs, a negative learning rate, an unknown loss) is refused up front, naming the field."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
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


RATE = Rule(0, 1)  # 0 is allowed: a run that only measures (losses, accuracy) without moving the weights
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
    "max_steps": Rule(1, None, optional=True),  # epochs already bound the steps
    "max_length": Rule(8, 131_072),
    "max_new_tokens": Rule(1, 32_768),
    "warmup_ratio": FRACTION,
    "weight_decay": Rule(0, 10),
    "adam_eps": Rule(0, 1, low_open=True),
    "max_grad_norm": Rule(0, 1e6),
    "eval_fraction": Rule(0, 0.9),
    "eval_every": Rule(0),
    "save_every": Rule(0),
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
    "advantage": Rule(choices=("gae", "rloo")),
    "samples_per_prompt": Rule(1, 1024, optional=True),
    "rollout_engine": Rule(choices=("local", "vllm")),
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
    "RewardConfig.pooling": Rule(choices=("last", "mean")),
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
    try:
        hints = typing.get_type_hints(type(config))
    except Exception:
        hints = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None and type(None) in _allowed_types(hints.get(f.name, object)):
            continue  # None is the field's own "off" or "automatic" value
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


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(annotation):
            out += _allowed_types(arg)
        return out
    if origin is not None:
        return (origin,)
    if annotation is float:
        return (float, int)
    return (annotation,) if isinstance(annotation, type) else (object,)


def _type_error(allowed: tuple[type, ...], value: Any) -> str | None:
    if object in allowed or (value is None and type(None) in allowed):
        return None
    if any(dataclasses.is_dataclass(t) for t in allowed):
        allowed += (dict,)  # nested configs (sampling, lora) arrive as JSON objects
    # bool is an int to Python, but true is no batch size
    if isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed):
        return None
    names = "/".join(sorted({t.__name__ for t in allowed}))
    return f"must be {names}, got {type(value).__name__} {value!r}"


def config_from_dict(cls: type, raw: Any) -> tuple[Any | None, dict[str, str]]:
    """Build config class `cls` from a JSON object: (config, {}) when every field is known, of the
    right type and in range, else (None, {field: what is wrong}). The one way the CLI and the job
    launcher turn user input into a stage config."""
    if not isinstance(raw, dict):
        return None, {"config": "must be a JSON object"}
    fields = {f.name for f in dataclasses.fields(cls)}
    try:  # resolves the string annotations `from __future__ import annotations` leaves
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    errors: dict[str, str] = {}
    for key, value in raw.items():
        if key not in fields:
            errors[key] = f"unknown field; known fields: {', '.join(sorted(fields))}"
        elif (message := _type_error(_allowed_types(hints.get(key, object)), value)) is not None:
            errors[key] = message
    if errors:
        return None, errors
    try:
        config = cls(**raw)
    except (TypeError, ValueError) as exc:
        return None, {"config": str(exc)}
    errors = config_errors(config)
    if not errors and hasattr(config, "validate"):
        try:
            config.validate()
        except (TypeError, ValueError) as exc:
            errors["config"] = str(exc)
    return (None, errors) if errors else (config, {})


def _field_help(cls: type) -> dict[str, str]:
    """The one-line comment after each field in the config classes' source: the help text."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for name, comment in re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.M):
            found[name] = comment.strip()
    return found


def config_fields(cls: type) -> list[dict[str, Any]]:
    """Each field of a config class as the launch form shows it: name, type, default, allowed
    values and help, read from the class itself so no page copies a default."""
    help_text = _field_help(cls)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            default = dataclasses.asdict(default)
        types_ = sorted({t.__name__ for t in _allowed_types(hints.get(f.name, object))})
        rule = rule_for(cls, f.name)
        out.append({"name": f.name, "type": types_, "default": default, "help": help_text.get(f.name, ""),
                    "min": rule.low if rule else None, "max": rule.high if rule else None,
                    "min_exclusive": bool(rule and rule.low_open),
                    "choices": list(rule.choices) if rule and rule.choices else None,
                    "nullable": "NoneType" in types_})
    return out
