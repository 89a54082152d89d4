"""What each job kind runs: its config class in rlhf, how its config is validated, and how its
data snapshot is taken (at launch) and read back (on the worker). rlhf is imported inside
functions so the web process only pays for torch when it validates a config."""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import Any

from config.errors import ApplicationError

# kind -> (module, config class, stage function). `generate` samples with the round generator.
STAGES: dict[str, tuple[str, str, str | None]] = {
    "sft": ("rlhf.sft", "SFTConfig", "train_sft"),
    "reward_model": ("rlhf.reward", "RewardConfig", "train_reward_model"),
    "ppo": ("rlhf.ppo", "PPOConfig", "train_ppo"),
    "dpo": ("rlhf.dpo", "DPOConfig", "train_dpo"),
    "generate": ("rlhf.sampling", "SamplingConfig", None),
    "evaluate": ("rlhf.evaluation", "EvalConfig", None),
}
# Keys of a generate job's config that are not sampling settings.
GENERATE_EXTRA = {"responses_per_prompt": 2, "batch_size": 8}
# Keys the service itself understands for PPO (the verifiable scorer by name).
PPO_EXTRA = {"scorer"}


def stage_config_class(kind: str) -> type:
    module, cls, _fn = STAGES[kind]
    return getattr(importlib.import_module(module), cls)


def stage_function(kind: str):
    module, _cls, fn = STAGES[kind]
    return getattr(importlib.import_module(module), fn)


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


def _check_fields(cls: type, raw: dict, extra: set[str]) -> tuple[dict, dict[str, str]]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:  # resolves the string annotations `from __future__ import annotations` leaves
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    errors: dict[str, str] = {}
    values: dict = {}
    for key, value in raw.items():
        if key in extra:
            continue
        if key not in fields:
            errors[key] = f"unknown field; known fields: {', '.join(sorted(fields))}"
            continue
        allowed = _allowed_types(hints[key]) if key in hints else (object,)
        if any(dataclasses.is_dataclass(t) for t in allowed):
            allowed += (dict,)  # nested configs (sampling, lora) arrive as JSON objects
        if (value is not None or type(None) not in allowed) and object not in allowed:
            # bool is an int to Python, but true is no batch size
            ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
            if not ok:
                names = "/".join(sorted({t.__name__ for t in allowed}))
                errors[key] = f"must be {names}, got {type(value).__name__} {value!r}"
                continue
        values[key] = value
    return values, errors


def config_validate(kind: str, raw: Any) -> dict:
    """The job config as the stage will get it, or ApplicationError naming each bad field."""
    if kind not in STAGES:
        raise ApplicationError(f"unknown job kind {kind!r}; one of: {', '.join(STAGES)}", code="invalid_kind",
                               details={"kind": "unknown"})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ApplicationError("config must be a JSON object", code="invalid_config")
    cls = stage_config_class(kind)
    extra = set(GENERATE_EXTRA) if kind == "generate" else (PPO_EXTRA if kind == "ppo" else set())
    values, errors = _check_fields(cls, raw, extra)
    result: dict = {}
    if kind == "generate":
        for key, default in GENERATE_EXTRA.items():
            value = raw.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
                errors[key] = "must be an integer from 1 to 16"
            result[key] = value
    if kind == "ppo" and raw.get("scorer") is not None:
        from rlhf.scorers import get_scorer

        try:
            get_scorer(raw["scorer"])
        except (KeyError, ValueError, TypeError) as exc:
            errors["scorer"] = str(exc).strip("'\"")
        result["scorer"] = raw["scorer"]
    if not errors:
        from rlhf.validation import config_errors

        try:
            config = cls(**values)
            errors.update(config_errors(config))
            if not errors and hasattr(config, "validate"):
                config.validate()
        except (TypeError, ValueError) as exc:
            errors["config"] = str(exc)
        else:
            result.update(dataclasses.asdict(config))
    if errors:
        first = next(iter(errors.items()))
        raise ApplicationError(f"invalid {kind} config: {first[0]}: {first[1]}"
                               + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                               code="invalid_config", details=errors)
    return result


def build_config(kind: str, stored: dict):
    """Rebuild the rlhf config dataclass from a job's stored (validated) config."""
    cls = stage_config_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in stored.items() if k in names})


def planned_steps(kind: str, config: dict, n_examples: int) -> int | None:
    """How many steps a job of `kind` will report, known before anything loads: a generate job's
    responses (prompts × responses per prompt), PPO's iterations, one evaluation, or the supervised
    loop's batches over the training part of the held-out split. For the supervised stages it is a
    plan: the split is by prompt and pairs too long for max_length are dropped, so the stage's first
    step may correct it (exact when each prompt has one example and none is too long)."""
    if kind == "generate":
        return n_examples * int(config.get("responses_per_prompt", GENERATE_EXTRA["responses_per_prompt"]))
    if kind == "evaluate":
        return 1
    built = build_config(kind, config)
    if kind == "ppo":
        return built.iterations
    from rlhf.data import split_eval
    from rlhf.training import total_steps_for

    train, _held = split_eval(list(range(n_examples)), built.eval_fraction, built.seed)
    return total_steps_for(built, len(train)) if train else None
