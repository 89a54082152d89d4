"""The job kinds, each declared once: its config class (in rlhf), the config keys the service adds,
the inputs it takes, how its data is frozen at launch, how it runs on a worker, and which model kind
it registers. The launcher, the runner, the rounds and the launch form (GET /api/job-kinds) all read
this table. rlhf is imported lazily, so the web process pays for torch only when it checks a config."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from config.errors import ApplicationError


@dataclass(frozen=True)
class ExtraField:
    """A config key the service understands beside the stage's own config class."""

    default: Any
    help: str
    check: Callable[[Any], str | None]  # -> what is wrong with a value, or None


@dataclass(frozen=True)
class JobKind:
    name: str
    help: str  # one line for the launch form
    config: str  # "module:Class" of its config dataclass
    run: str  # "module:function" that runs it on a worker: (job, reporter) -> outputs
    snapshot: str  # "module:function" that freezes its data at launch: (project, inputs) -> inputs
    inputs: tuple[str, ...] = ("policy",)  # the inputs it accepts (model version ids, prompt ids)
    produces: str | None = None  # the ModelVersion kind it registers, if any
    extra: dict[str, ExtraField] = field(default_factory=dict)
    train: str | None = None  # training kinds: "module:function" of the rlhf stage
    rows: str | None = None  # training kinds: "module:function" reading the frozen rows back: (job) -> rows

    def config_class(self) -> type:
        return _load(self.config)

    def runner(self) -> Callable:
        return _load(self.run)

    def snapshotter(self) -> Callable:
        return _load(self.snapshot)

    def stage(self) -> Callable:
        return _load(self.train)

    def reader(self) -> Callable:
        return _load(self.rows)


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _int_between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be an integer from {low} to {high}"
    return check


def _scorer(value: Any) -> str | None:
    if value is None:
        return None
    from rlhf.scorers import get_scorer

    try:
        get_scorer(value)
    except (KeyError, ValueError, TypeError) as exc:
        return str(exc).strip("'\"")
    return None


def _stage(name: str) -> dict[str, str]:
    """A training kind's config class and train function: rlhf's own declaration of the stage
    (rlhf/stages.py, a plain table, so reading it imports no torch)."""
    from rlhf.stages import STAGES

    return {"config": STAGES[name].config, "train": STAGES[name].train}


def _accelerate_config(value: Any) -> str | None:
    if value is None:
        return None
    from rlhf.launch import shipped_configs

    names = shipped_configs()
    return None if value in names else f"must be one of {', '.join(names)} (or null), got {value!r}"


# Every training kind can run on several processes (rlhf/accelerate_configs; training/launched.py).
LAUNCH = {
    "processes": ExtraField(1, "processes to train on (accelerate launch; 1 runs inside the worker)",
                            _int_between(1, 64)),
    "accelerate_config": ExtraField(None, "shipped accelerate config: ddp_cpu, ddp, fsdp or zero3 (null: ddp on "
                                          "GPUs, ddp_cpu without; set it to launch even one process)",
                                    _accelerate_config),
}
SNAPSHOTS = "training.snapshots"
TRAIN = "training.stage_jobs:run_training"
KINDS: dict[str, JobKind] = {kind.name: kind for kind in (
    JobKind("sft", "Trains the policy on the project's demonstrations (next-token loss on the answers).",
            **_stage("sft"), rows=f"{SNAPSHOTS}:read_demonstrations", run=TRAIN,
            snapshot=f"{SNAPSHOTS}:demonstrations", produces="policy", extra=LAUNCH),
    JobKind("reward_model", "Trains a scalar reward head on the project's pairs; reports held-out pairwise "
            "accuracy.", **_stage("reward"), rows=f"{SNAPSHOTS}:read_pairs", run=TRAIN,
            snapshot=f"{SNAPSHOTS}:pairs", produces="reward", extra=LAUNCH),
    JobKind("ppo", "Optimises the policy against the reward model (or a verifiable scorer) with a KL penalty to "
            "the starting policy.", **_stage("ppo"), rows=f"{SNAPSHOTS}:read_prompts", run=TRAIN,
            snapshot=f"{SNAPSHOTS}:ppo_prompts",
            inputs=("policy", "reward_model"), produces="policy",
            extra={"scorer": ExtraField(None, "a verifiable scorer instead of the reward model: a name "
                                              "(numeric, exact_match, contains, regex) or {name, ...}", _scorer),
                   **LAUNCH}),
    JobKind("dpo", "Trains the policy directly on the pairs; no reward model needed.", **_stage("dpo"),
            rows=f"{SNAPSHOTS}:read_pairs", run=TRAIN, snapshot=f"{SNAPSHOTS}:pairs", produces="policy",
            extra=LAUNCH),
    JobKind("generate", "Samples responses from the policy for prompts and makes ranking tasks (rounds start "
            "this for you).", config="rlhf.sampling:SamplingConfig", run="training.generation:run_generate",
            snapshot=f"{SNAPSHOTS}:given_prompts", inputs=("policy", "prompt_ids"),
            extra={"responses_per_prompt": ExtraField(2, "responses sampled per prompt (one task each prompt)",
                                                      _int_between(1, 16)),
                   "batch_size": ExtraField(8, "prompts decoded together", _int_between(1, 16))}),
    JobKind("evaluate", "Compares a candidate policy with the one it came from on held-out prompts (reward, "
            "win rate, KL).", config="rlhf.evaluation:EvalConfig", run="training.evaluation:run_evaluate",
            snapshot=f"{SNAPSHOTS}:evaluation", inputs=("policy", "candidate", "reward_model", "prompt_ids")),
)}


def job_kind(name: str) -> JobKind:
    if name not in KINDS:
        raise ApplicationError(f"unknown job kind {name!r}; one of: {', '.join(KINDS)}", code="invalid_kind",
                               details={"kind": "unknown"})
    return KINDS[name]


def config_validate(kind: str, raw: Any) -> dict:
    """The job config as the stage will get it (every default filled in), or ApplicationError
    naming each bad field."""
    from rlhf.validation import config_from_dict

    spec = job_kind(kind)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ApplicationError("config must be a JSON object", code="invalid_config")
    errors: dict[str, str] = {}
    result: dict = {}
    for key, extra in spec.extra.items():
        value = raw.get(key, extra.default)
        if (message := extra.check(value)) is not None:
            errors[key] = message
        result[key] = value
    config, config_errors = config_from_dict(spec.config_class(), {k: v for k, v in raw.items()
                                                                   if k not in spec.extra})
    errors.update(config_errors)
    if errors:
        first = next(iter(errors.items()))
        raise ApplicationError(f"invalid {kind} config: {first[0]}: {first[1]}"
                               + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                               code="invalid_config", details=errors)
    return {**dataclasses.asdict(config), **result}


def build_config(kind: str, stored: dict) -> Any:
    """The rlhf config dataclass of a job, from its stored (validated) config."""
    cls = job_kind(kind).config_class()
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in stored.items() if k in names})


def kinds_describe() -> list[dict]:
    """Every kind with its fields, defaults, ranges and help: what the launch form is built from."""
    from rlhf.validation import config_fields

    out = []
    for spec in KINDS.values():
        fields = config_fields(spec.config_class())
        fields += [{"name": key, "type": ["object"], "default": extra.default, "help": extra.help, "min": None,
                    "max": None, "min_exclusive": False, "choices": None, "nullable": extra.default is None}
                   for key, extra in spec.extra.items()]
        out.append({"kind": spec.name, "help": spec.help, "inputs": list(spec.inputs), "produces": spec.produces,
                    "fields": fields})
    return out


def planned_steps(kind: str, config: dict, n_examples: int) -> int | None:
    """How many steps a job of `kind` will report, known before anything loads: a generate job's
    responses (prompts × responses per prompt), PPO's iterations, one evaluation, or the supervised
    loop's batches over the training part of the held-out split. For the supervised stages it is a
    plan: the split is by prompt and pairs too long for max_length are dropped, so the stage's first
    step may correct it (exact when each prompt has one example and none is too long)."""
    if kind == "generate":
        return n_examples * int(config.get("responses_per_prompt", KINDS["generate"].extra["responses_per_prompt"].default))
    if kind == "evaluate":
        return 1
    built = build_config(kind, config)
    if kind == "ppo":
        return built.iterations
    from rlhf.data import split_eval
    from rlhf.training import total_steps_for

    train, _held = split_eval(list(range(n_examples)), built.eval_fraction, built.seed)
    return total_steps_for(built, len(train)) if train else None
