"""PPO stage, following the project's PPO checklist: policy with a value head (or a critic from the
reward model), frozen reference, per-token KL penalty with a fixed or adaptive coefficient, GAE,
clipped losses, whitening, the missing-EOS penalty, per-step metrics with alarms, and resume.

TRL 1.16 no longer ships a PPO trainer, so this loop is ours; it shares sampling, data, losses and
checkpoints with the other stages.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.callbacks import OnStage, StopRequested, stage_begins
from rlhf.checkpoints import (
    check_new_output,
    check_resumable_world,
    data_summary,
    load_trainable_state,
    load_training_state,
    rng_state,
    save_model_dir,
    save_world_state,
    set_rng_state,
    trainable_state,
)
from rlhf.distributed import world_for
from rlhf.lora import LoraOptions, apply_lora, is_peft, lora_options
from rlhf.models import (
    PolicyWithValue,
    autocast,
    critic_from_reward_model,
    frozen_copy,
    load_policy,
    load_reward_model,
    policy_logits_for_response,
)
from rlhf.ppo_control import KLController, alarms_for
from rlhf.ppo_update import ActorCritic, iteration_metrics, iteration_seed, ppo_update
from rlhf.rollout import add_advantages, collect_rollout
from rlhf.rollout_engine import EngineRollouts, engine_options_error
from rlhf.sampling import SamplingConfig, make_generator
from rlhf.scorers import Scorer, get_scorer
from rlhf.stage import disable_dropout
from rlhf.tokenization import encode_prompt, eos_token_ids
from rlhf.training import (
    OnStep,
    OptimConfig,
    ShouldStop,
    StageResult,
    make_optimizer,
    out_path,
)
from rlhf.validation import require_valid


def _rollout_sampling() -> SamplingConfig:
    # Plain multinomial sampling, the only kind PPO accepts (see PPOConfig.sampling_config);
    # temperature 0.7 as in the N+ reproduction.
    return SamplingConfig(strategy="multinomial", temperature=0.7, max_new_tokens=64)


@dataclass
class PPOConfig(OptimConfig):
    learning_rate: float | None = None  # None: 1e-4 under LoRA, 3e-6 (N+'s 1B value) for full weights
    adam_eps: float = 1e-5  # the checklist's AdamW epsilon for PPO
    # "auto": LoRA on all linear layers on CPU (a 135M policy's update is ~2x cheaper and the
    # reference is the base with the adapter off, no copy), full weights on a GPU; None: full.
    lora: LoraOptions | dict | str | None = "auto"
    iterations: int = 20  # rollout + update cycles
    rollout_batch_size: int = 8  # responses sampled per iteration (>= 8 so whitening is stable)
    mini_batch_size: int = 4  # rollouts per optimizer step
    ppo_epochs: int = 4  # passes over each rollout batch, reshuffled each time
    sampling: SamplingConfig | dict = field(default_factory=_rollout_sampling)  # rollout sampling
    kl_coef: float = 0.05  # beta of the per-token KL penalty (start value when adaptive)
    kl_target: float | None = None  # set (e.g. 6.0 nats) for an adaptive beta; None keeps it fixed
    # Adaptive controller horizon in samples. None: a fifth of the run's samples, so beta can move
    # up to ~e-fold in a run (a fixed 10,000 cannot move it at 8 samples an iteration).
    kl_horizon: int | None = None
    kl_estimator: str = "k1"  # k1 (log-ratio, as in the reward) | k3 | abs
    gamma: float = 1.0  # discount; 1 as episodes are short and end at EOS
    lam: float = 0.95  # GAE lambda
    cliprange: float = 0.2  # policy ratio clip
    cliprange_value: float = 0.2  # value clip around the old values
    vf_coef: float = 0.1  # value-loss weight
    whiten_rewards: bool = True  # scale-only whitening of per-token rewards (skipped below 8 rollouts)
    normalize_scores: bool = True  # reward-model scores -> (s - mean) / std with the saved stats
    # Score given to responses without EOS (None: off, the reward model scores them as they are).
    # Off by default: N+ used -1 for TL;DR summaries that end well inside the rollout length, but a
    # chat model's answers mostly do not. Measured with bench/learning.py on SmolLM2-135M-Instruct
    # and its built-in prompts: 87.5% of answers are cut at 64 tokens (75% at 128), so the penalty
    # replaced nearly every reward-model score by the same -1 and PPO learnt "stop early", not what
    # the annotators ranked. The reward model was trained on candidates cut the same way, so it
    # scores cut rollouts in distribution. Set it when rollouts are long enough to end.
    missing_eos_penalty: float | None = None
    critic: str = "head"  # head: value head on the policy | reward_model: separate critic from the RM
    # How each response's advantage is estimated. "gae": from a learnt value (the critic above), per
    # token, as InstructGPT and N+ do. "rloo": REINFORCE leave-one-out, as TRL's RLOO trainer does:
    # samples_per_prompt responses to each prompt, each one's baseline the mean return of the others,
    # and no critic to learn (a critic learnt from scratch in a few hundred samples is mostly noise).
    # The default, measured with bench/learning.py --stages ppo-rule (PPO rewarded by the rule, 20
    # iterations x 8 rollouts): rule preferred the new answer short-sentences 0.81 vs GAE's 0.58,
    # positive 0.77 vs 0.59, question 0.45 vs 0.53 (no move under either; sparse reward), at a KL
    # of 5-6 nats (README "Learning").
    advantage: str = "rloo"  # gae: per-token, from the critic | rloo: the other responses to the prompt
    # Responses sampled for each prompt of an iteration (rollout_batch_size counts responses, so an
    # iteration covers rollout_batch_size / samples_per_prompt prompts). RLOO needs at least 2.
    # None: 1 under gae; under rloo 4, or the largest smaller group that divides rollout_batch_size
    # (all of them when none does).
    samples_per_prompt: int | None = None  # responses per prompt in an iteration (rloo: >= 2; None: auto)
    # Where rollouts are sampled. "local": the in-process sampler on the training weights (the
    # default: on a small CPU box a vLLM server beside the trainer competes for the same cores).
    # "vllm": a vLLM server samples from the LoRA adapter being trained, synced every iteration,
    # and the trainer recomputes the log-probs (rlhf/rollout_engine.py). Needs LoRA; one process
    # unless rollout_engine_url names a server every rank reaches.
    rollout_engine: str = "local"  # local: the in-process sampler | vllm: a vLLM server (LoRA only)
    rollout_engine_url: str | None = None  # a running vLLM server (http://host:port); None: start one
    rollout_engine_options: dict = field(default_factory=dict)  # EngineConfig fields of a started one
    save_every: int = 5  # iterations between resumable states (0: only on cancel)
    sample_responses: int = 2  # responses logged in each step's metrics
    kl_alarm: float = 20.0  # alarm when mean sequence KL exceeds this many nats

    def sampling_config(self) -> SamplingConfig:
        """The rollout sampling, validated. PPO's ratio and KL assume the tokens were drawn from the
        policy's own distribution (at a temperature, which the log-probs also divide by), so top-k,
        top-p < 1 and greedy rollouts are refused; top-p at 1 is plain sampling."""
        cfg = self.sampling if isinstance(self.sampling, SamplingConfig) else SamplingConfig(**self.sampling)
        cfg.validate()
        if cfg.strategy == "top_p" and cfg.top_p >= 1.0:
            cfg = dataclasses.replace(cfg, strategy="multinomial")
        if cfg.strategy != "multinomial":
            raise ValueError(f"PPO rollouts sample from the policy being optimised: sampling.strategy must be "
                             f"multinomial (temperature allowed), got {cfg.strategy!r}"
                             + (f" with top_p {cfg.top_p}" if cfg.strategy == "top_p" else ""))
        return cfg

    def validate(self) -> PPOConfig:
        self.sampling_config()
        if self.critic not in ("head", "reward_model"):
            raise ValueError(f"critic must be 'head' or 'reward_model', got {self.critic!r}")
        if self.advantage not in ("gae", "rloo"):
            raise ValueError(f"advantage must be 'gae' or 'rloo', got {self.advantage!r}")
        group = self.group_size()
        if self.rollout_batch_size % group:
            raise ValueError(f"rollout_batch_size {self.rollout_batch_size} is not a multiple of "
                             f"samples_per_prompt {group}")
        if self.advantage == "rloo" and group < 2:
            raise ValueError("advantage 'rloo' compares the responses to one prompt: samples_per_prompt and "
                             "rollout_batch_size must be >= 2")
        if self.rollout_engine not in ("local", "vllm"):
            raise ValueError(f"rollout_engine must be 'local' or 'vllm', got {self.rollout_engine!r}")
        if self.rollout_engine_url is not None and not str(self.rollout_engine_url).startswith(("http://", "https://")):
            raise ValueError(f"rollout_engine_url must be an http(s) URL, got {self.rollout_engine_url!r}")
        if not isinstance(self.rollout_engine_options, dict):
            raise ValueError("rollout_engine_options must be an object of engine settings")
        if error := engine_options_error(self.rollout_engine_options):
            raise ValueError(error)
        if self.advantage == "rloo" and self.critic != "head":
            raise ValueError("advantage 'rloo' learns no critic: set advantage to 'gae' to use critic "
                             f"{self.critic!r}")
        if isinstance(self.lora, str) and self.lora != "auto":
            raise ValueError(f"lora must be options, null or 'auto', got {self.lora!r}")
        return self

    def group_size(self) -> int:
        """Responses per prompt in an iteration (samples_per_prompt, or its automatic value)."""
        if self.samples_per_prompt is not None:
            return self.samples_per_prompt
        if self.advantage != "rloo":
            return 1
        n = self.rollout_batch_size
        return next((k for k in (4, 3, 2) if n % k == 0), n)

    def lora_for(self, device: torch.device) -> LoraOptions | None:
        if self.lora == "auto":
            return LoraOptions() if device.type == "cpu" else None
        return lora_options(self.lora)

    def learning_rate_for(self, lora: LoraOptions | None) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if lora is not None else 3e-6

    def horizon(self) -> int:
        return self.kl_horizon or max(1, self.iterations * self.rollout_batch_size // 5)


def train_ppo(config: PPOConfig, prompts: list[dict], policy: str | Path, reward_model: str | Path | None,
              out_dir: str | Path, scorer: str | dict | Scorer | None = None, on_step: OnStep | None = None,
              should_stop: ShouldStop | None = None, on_stage: OnStage | None = None) -> StageResult:
    """PPO on prompts [{"prompt", "reference"?}] from the `policy` directory (usually the SFT model),
    rewarded by the reward model directory or by a scorer; the policy is saved to out_dir.

    Resumable: the state is saved every `save_every` iterations and on cancel under out_dir, and a
    call with the same out_dir continues from it (on any number of processes: see below).

    Under `accelerate launch` with DDP, `rollout_batch_size` and `mini_batch_size` are global: each
    rank samples, scores and trains on its share of every batch, whitening and the KL controller use
    the statistics of the whole batch, and the metrics are global. Each rank samples with its own
    seed, drawn fresh every iteration, so the saved state has no per-rank part. FSDP and DeepSpeed
    are refused here: the in-process sampler needs each rank's full weights.
    """
    if (reward_model is None) == (scorer is None):
        raise ValueError("give exactly one of reward_model (a directory) and scorer")
    if config.critic == "reward_model" and reward_model is None:
        raise ValueError("critic='reward_model' needs a reward model to initialise the critic from")
    if not prompts:
        raise ValueError("no prompts")
    config.validate()
    require_valid(config)
    check_new_output(out_dir)
    sampling = config.sampling_config()
    random.seed(config.seed)
    torch.manual_seed(config.seed)  # the same on every rank while the models are built
    world = world_for(config.device, config.precision)
    if world.sharded:
        raise ValueError(f"PPO runs on one process or under DDP; {world.engine} is not supported (its rollouts "
                         "need each rank's full weights): use the ddp config, or LoRA to fit the GPU")
    group = config.group_size()
    if config.rollout_batch_size // group < world.size:
        raise ValueError(f"rollout_batch_size {config.rollout_batch_size} covers {config.rollout_batch_size // group} "
                         f"prompt(s), fewer than the {world.size} processes: every rank needs at least one prompt")
    device = world.device
    model, tokenizer = load_policy(policy, device=str(device))  # eval mode: dropout stays off in RL
    disable_dropout(model)
    lora = config.lora_for(device)
    if lora is not None:
        model = apply_lora(model, lora)
    actor = PolicyWithValue(model).to(device)
    # The reward model only scores: kept in bf16 when the run computes in bf16 (its head in fp32).
    frozen_dtype = torch.bfloat16 if config.precision == "bf16" else None
    rm = load_reward_model(reward_model, device=str(device), dtype=frozen_dtype) if reward_model is not None else None
    the_scorer = get_scorer(scorer) if scorer is not None else None
    critic = None
    if config.critic == "reward_model":
        critic = disable_dropout(critic_from_reward_model(rm))
        if lora is not None:
            critic = apply_lora(critic, lora, task="seq_cls")
    if config.rollout_engine == "vllm" and lora is None:
        raise ValueError("rollouts on vLLM sync the policy as a LoRA adapter each iteration: set lora "
                         "(full-weight syncing is not supported)")
    if config.rollout_engine == "vllm" and world.distributed and not config.rollout_engine_url:
        raise ValueError("with several processes, rollouts on vLLM need rollout_engine_url (one server every rank reaches)")
    reference = _reference_fn(model, lora is not None, config.precision)
    params = [p for p in actor.parameters() if p.requires_grad]
    if critic is not None:
        actor.value_head.requires_grad_(False)
        params = [p for p in params if all(p is not q for q in actor.value_head.parameters())]
        params += [p for p in critic.parameters() if p.requires_grad]
    n_mb = -(-config.rollout_batch_size // config.mini_batch_size)
    optim = dataclasses.replace(config, learning_rate=config.learning_rate_for(lora))
    optimizer, scheduler = make_optimizer(params, optim, config.iterations * config.ppo_epochs * n_mb)
    data_rng = random.Random(config.seed)  # the prompt order: the same on every rank
    kl_ctl = KLController(config.kl_coef, config.kl_target, config.horizon())
    max_prompt = max(1, config.max_length - sampling.max_new_tokens)
    eos_ids = eos_token_ids(tokenizer, model)
    order: list[int] = []
    history: list[dict[str, Any]] = []
    start_iter = 0

    state = load_training_state(out_dir)
    if state is not None:
        check_resumable_world(state, world)
        load_trainable_state(actor, state["actor"])
        if critic is not None:
            load_trainable_state(critic, state["critic"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        kl_ctl.coef = state["kl_coef"]
        data_rng.setstate(state["data_rng"])
        set_rng_state(state["rng"])
        order, history, start_iter = state["order"], state["history"], state["iteration"]
    torch.manual_seed(world.rank_seed(config.seed) or 0)
    trained, optimizer, scheduler = world.prepare(ActorCritic(actor, critic), optimizer, scheduler)

    def save_state(iteration: int) -> None:
        save_world_state(world, out_dir, lambda: {
            "actor": trainable_state(actor), "critic": trainable_state(critic) if critic is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "kl_coef": kl_ctl.coef,
            "data_rng": data_rng.getstate(), "rng": rng_state(), "order": order, "history": history,
            "iteration": iteration, **world.describe()})

    def ctx() -> Any:
        return autocast(device, config.precision)

    def stop() -> bool:  # the agreed answer: a collective under DDP, so only at points every rank reaches
        return world.any(should_stop is not None and should_stop())

    engine = None
    if config.rollout_engine == "vllm":
        stage_begins(on_stage, "starting the rollout engine")
        # One run id for the adapter names on every rank (rank 0's).
        run = world.gather([secrets.token_hex(4)])[0] if world.distributed else secrets.token_hex(4)
        engine = EngineRollouts(policy, out_path(out_dir).parent, url=config.rollout_engine_url, lora_rank=lora.r,
                                max_length=config.max_length, precision=config.precision,
                                options=config.rollout_engine_options, run=run, is_main=world.is_main)
    try:
        first = history[0] if history else None
        for iteration in range(start_iter, config.iterations):
            if stop():
                save_state(iteration)
                return StageResult(None, history[-1] if history else {}, history, cancelled=True)
            t0 = time.perf_counter()
            picked = []
            for _ in range(config.rollout_batch_size // group):
                if not order:
                    order = list(range(len(prompts)))
                    data_rng.shuffle(order)
                picked.append(prompts[order.pop()])
            # Each prompt's responses are consecutive rows on one rank (RLOO's groups).
            mine = [p for p in world.share(picked) for _ in range(group)]
            prompt_texts = [p["prompt"] for p in mine]
            prompt_ids = [encode_prompt(tokenizer, p, wrap_plain=config.wrap_plain_prompts)[-max_prompt:]
                          for p in prompt_texts]
            seed = iteration_seed(config.seed, world.rank, iteration)
            generator = make_generator(seed, device)
            shuffle = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(2**62, (1,))))
            try:
                stage_begins(on_stage, "generating")
                # Alone a stop is seen at every decoded token; under DDP ranks decode different lengths,
                # so the stop is agreed after the rollout (a cancel waits for one decode at most).
                if engine is not None:
                    engine.sync(actor.policy, iteration)
                    world.barrier()  # rank 0 loaded the adapter: every rank samples from it
                rollout = collect_rollout(actor=actor, critic=critic, reference=reference, tokenizer=tokenizer,
                                          prompts=prompt_texts, prompt_ids=prompt_ids,
                                          references=[p.get("reference") for p in mine], sampling=sampling,
                                          generator=generator, eos_ids=eos_ids, reward_model=rm, scorer=the_scorer,
                                          config=config, autocast_ctx=ctx,
                                          should_stop=None if world.distributed else should_stop, on_stage=on_stage,
                                          engine=engine, seed=seed)
                beta = kl_ctl.coef
                add_advantages(rollout, kl_coef=beta, kl_estimator=config.kl_estimator, gamma=config.gamma,
                               lam=config.lam, whiten_rewards=config.whiten_rewards,
                               all_sum=world.sum if world.distributed else None, estimator=config.advantage,
                               group=group)
                t_update = time.perf_counter()
                stage_begins(on_stage, "updating")
                stats = ppo_update(trained, rollout, config, sampling.temperature, params, optimizer, scheduler,
                                   shuffle, ctx, stop if world.distributed else should_stop, world)
            except StopRequested:
                # Stopped inside an iteration: its half-done update is not saved; the last resumable
                # state (at most save_every iterations back) is where a relaunch continues.
                return StageResult(None, history[-1] if history else {}, history, cancelled=True)
            t_end = time.perf_counter()
            metrics = iteration_metrics(iteration, rollout, stats, beta, mine, config, scheduler, world)
            metrics.update(rollout.timings, time_update_s=t_end - t_update, iteration_time_s=t_end - t0,
                           rollout_engine=config.rollout_engine)
            if rollout.engine_logprob_gap is not None:
                metrics["engine_logprob_gap"] = float(world.reduce_metrics(
                    {"gap": rollout.engine_logprob_gap}, float(rollout.response_mask.sum()))["gap"])
            metrics["tokens_per_s"] = metrics["response_tokens"] / max(t_end - t0, 1e-9)
            first = first or metrics
            metrics["alarms"] = alarms_for(metrics, first, config)
            kl_ctl.update(metrics["kl"], config.rollout_batch_size)
            history.append(metrics)
            if on_step is not None:
                on_step(dict(metrics))
            if config.save_every and (iteration + 1) % config.save_every == 0 and iteration + 1 < config.iterations:
                save_state(iteration + 1)

        final = history[-1] if history else {}
        stage_begins(on_stage, "saving")
        if world.is_main:
            save_model_dir(actor.policy, tokenizer, out_path(out_dir), stage="ppo", config=config,
                           metrics=final, base=str(policy),
                           summary=data_summary(prompts, reward_model=str(reward_model) if reward_model else None,
                                                scorer=scorer if isinstance(scorer, str | dict) else None,
                                                samples_seen=final.get("samples_seen"), **world.describe()),
                           extra_json={"history.json": history},
                           merge_lora=lora.merge if lora else True)
        world.barrier()
        return StageResult(str(out_dir), final, history)
    finally:
        if engine is not None:
            engine.close()


def _reference_fn(model: Any, with_lora: bool, precision: str) -> Any:
    """Reference logits: the base with the adapter switched off under LoRA (one copy of the weights
    serves both), otherwise a frozen copy of the starting policy (bf16 in a bf16 run)."""
    if with_lora and is_peft(model):
        def ref(ids: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
            with model.disable_adapter():
                return policy_logits_for_response(model, ids, mask, length)
        return ref
    frozen = frozen_copy(model, precision)
    return lambda ids, mask, length: policy_logits_for_response(frozen, ids, mask, length)
