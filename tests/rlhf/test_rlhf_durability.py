"""Nothing is lost in rlhf/: a model directory appears whole or not at all, whenever its writer is
killed; it is never replaced; every training stage resumes exactly where it stopped; a stop request
is seen inside a decode; a config that trains nothing is refused before any work."""

from __future__ import annotations

import os
import time

import pytest
import torch
from rlhf_testkit import keyword_pairs, save_tiny_base, tiny_causal_lm, tiny_tokenizer

from rlhf.callbacks import StopRequested
from rlhf.checkpoints import (
    STATE_FILE,
    atomic_directory,
    load_training_state,
    partial_prefix,
    save_model_dir,
    save_training_state,
    state_dir,
)
from rlhf.dpo import DPOConfig, train_dpo
from rlhf.models import load_policy
from rlhf.ppo import PPOConfig, train_ppo
from rlhf.reward import RewardConfig, train_reward_model
from rlhf.sampling import SamplingConfig, generate
from rlhf.sft import SFTConfig, train_sft
from rlhf.validation import config_errors

FAST = dict(precision="fp32", device="cpu")


def _write_model(out, model, tok):
    save_model_dir(model, tok, out, stage="sft", config={"lr": 1}, metrics={"loss": 1.0}, summary={"count": 1})


def _killed_at(k: int, out, model, tok) -> bool:
    """Run the writer in a forked child that dies (like a SIGKILL) at its k-th fsync or rename.
    True when the writer got that far (so it was killed), False when it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: count the durable steps, die at the k-th
        calls = {"n": 0}
        real_fsync, real_rename = os.fsync, os.rename

        def step(real):
            def wrapped(*args):
                calls["n"] += 1
                if calls["n"] == k:
                    os._exit(137)
                return real(*args)
            return wrapped

        os.fsync, os.rename = step(real_fsync), step(real_rename)
        try:
            _write_model(out, model, tok)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 137


def test_a_writer_killed_at_any_step_leaves_the_whole_model_or_none(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tok)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    outcomes = set()
    for k in range(1, 200):
        out = tmp_path / f"model-{k}"
        killed = _killed_at(k, out, model, tok)
        if out.exists():  # published: it must be complete and load as it was written
            loaded, _ = load_policy(out)
            assert all(torch.equal(loaded.state_dict()[n], t) for n, t in reference.items()), k
            assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json"} <= {
                p.name for p in out.iterdir()}
            outcomes.add("complete")
        else:
            assert killed, "a writer that finished must have published its directory"
            outcomes.add("none")
        if not killed:
            break
    assert outcomes == {"complete", "none"}, "the kills must cover steps before and after the rename"
    assert k > 10, "the writer fsyncs every file before the rename"


def test_a_model_directory_is_never_replaced(tmp_path):
    tok = tiny_tokenizer()
    out = tmp_path / "model"
    _write_model(out, tiny_causal_lm(tok, seed=0), tok)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="written once"):
        _write_model(out, tiny_causal_lm(tok, seed=1), tok)
    assert (out / "model.safetensors").read_bytes() == before
    assert not list(tmp_path.glob(partial_prefix(out) + "*")), "no temporary directory is left behind"
    with pytest.raises(FileExistsError):  # a stage refuses before training, not after
        train_sft(SFTConfig(**FAST, max_steps=1), [{"prompt": "a", "response": "b"}], out, out)


def test_an_error_while_writing_leaves_nothing(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_training_state_is_replaced_atomically(tmp_path):
    out = tmp_path / "run"
    save_training_state(out, {"step": 1})
    pid = os.fork()
    if pid == 0:
        os.replace = lambda *a: os._exit(137)  # die just before the new state takes the old one's place
        try:
            save_training_state(out, {"step": 2})
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert load_training_state(out)["step"] == 1  # the previous state, whole
    assert (state_dir(out) / STATE_FILE).is_file() and not out.exists()


def _tiny_pairs():
    return keyword_pairs(24, seed=3)


STAGES = {
    "sft": lambda cfg, base, out, **kw: train_sft(SFTConfig(**cfg), [
        {"prompt": p["prompt"], "response": p["chosen"]} for p in _tiny_pairs()], base, out, **kw),
    "reward": lambda cfg, base, out, **kw: train_reward_model(RewardConfig(**cfg), _tiny_pairs(), base, out, **kw),
    "dpo": lambda cfg, base, out, **kw: train_dpo(DPOConfig(**cfg), _tiny_pairs(), base, out, **kw),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_resumes_exactly_where_it_stopped(stage, tmp_path):
    base = save_tiny_base(tmp_path / "base")
    cfg = dict(FAST, learning_rate=1e-3, batch_size=4, epochs=2, eval_fraction=0.0, save_every=0, max_length=64)
    straight = STAGES[stage](cfg, base, tmp_path / "straight")
    steps = []
    cut = STAGES[stage](cfg, base, tmp_path / "resumed", on_step=steps.append, should_stop=lambda: len(steps) >= 7)
    assert cut.cancelled and len(steps) == 7 and cut.out_dir is None
    assert (state_dir(tmp_path / "resumed") / STATE_FILE).is_file()
    resumed = STAGES[stage](cfg, base, tmp_path / "resumed", on_step=steps.append)
    assert [m["step"] for m in steps] == list(range(1, 13)), "the resumed run takes steps 8..12, crossing an epoch"
    assert [m["loss"] for m in resumed.history] == [m["loss"] for m in straight.history]
    a = load_policy(straight.out_dir)[0].state_dict() if stage != "reward" else _rm(straight.out_dir)
    b = load_policy(resumed.out_dir)[0].state_dict() if stage != "reward" else _rm(resumed.out_dir)
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    assert not state_dir(tmp_path / "resumed").exists(), "the finished model supersedes the saved state"


def _rm(path):
    from rlhf.models import load_reward_model

    return load_reward_model(path).model.state_dict()


def test_periodic_states_let_a_crashed_run_continue(tmp_path):
    """save_every writes a state while running, so a run killed outright (no chance to save) resumes
    from its last periodic state instead of from scratch."""
    base = save_tiny_base(tmp_path / "base")
    cfg = dict(FAST, learning_rate=1e-3, batch_size=4, epochs=1, eval_fraction=0.0, save_every=2, max_length=64)

    class Crash(Exception):
        pass

    def crash_at_5(m):
        if m["step"] == 5:
            raise Crash()

    with pytest.raises(Crash):
        STAGES["reward"](cfg, base, tmp_path / "run", on_step=crash_at_5)
    assert load_training_state(tmp_path / "run")["step"] == 4
    steps = []
    STAGES["reward"](cfg, base, tmp_path / "run", on_step=steps.append)
    assert [m["step"] for m in steps] == [5, 6]


def test_a_stop_request_is_seen_inside_a_long_decode(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tok)
    model.generation_config.eos_token_id = None
    config = SamplingConfig(strategy="greedy", max_new_tokens=100_000)
    asked = []

    def stop() -> bool:
        asked.append(time.monotonic())
        return len(asked) >= 40

    with pytest.raises(StopRequested):
        # An EOS the greedy decode never picks keeps the batch going: only the stop ends it.
        tok.eos_token = tok.convert_ids_to_tokens(len(tok) - 1)
        generate(model, tok, ["the cat sat"], config, should_stop=stop)
    assert len(asked) == 40, "asked once per decoded token, and the decode ended at the first yes"


def test_ppo_sees_a_stop_inside_an_iteration(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    cfg = PPOConfig(iterations=3, rollout_batch_size=8, mini_batch_size=2, ppo_epochs=4, save_every=0,
                    sampling={"strategy": "multinomial", "temperature": 1.0, "max_new_tokens": 8}, **FAST)
    asked = []
    result = train_ppo(cfg, [{"prompt": "the cat"}] * 8, base, None, tmp_path / "ppo",
                       scorer={"scorer": "contains", "text": "cat"}, should_stop=lambda: asked.append(1) or
                       len(asked) > 12)
    assert result.cancelled and result.history == [] and not (tmp_path / "ppo").exists()


@pytest.mark.parametrize("config, field", [
    (SFTConfig(epochs=0), "epochs"), (SFTConfig(epochs=-3), "epochs"), (RewardConfig(learning_rate=-1e-5),
                                                                       "learning_rate"),
    (RewardConfig(batch_size=0), "batch_size"), (RewardConfig(loss="nope"), "loss"), (DPOConfig(loss="nope"), "loss"),
    (PPOConfig(iterations=0), "iterations"), (PPOConfig(iterations=10**13), "iterations"),
    (PPOConfig(sampling={"strategy": "multinomial", "max_new_tokens": 10**9}), "sampling.max_new_tokens"),
    (SFTConfig(learning_rate=float("nan")), "learning_rate"), (SFTConfig(lora={"r": 0}), "lora.r"),
])
def test_configs_that_cannot_train_are_refused_naming_the_field(config, field, tmp_path):
    assert field in config_errors(config)
    with pytest.raises(ValueError, match=field.split(".")[-1]):
        stage = {SFTConfig: train_sft, RewardConfig: train_reward_model, DPOConfig: train_dpo}.get(type(config))
        if stage is None:
            train_ppo(config, [{"prompt": "x"}], tmp_path, None, tmp_path / "out", scorer="numeric")
        else:
            stage(config, [{"prompt": "x", "response": "y", "chosen": "y", "rejected": "z"}], tmp_path, tmp_path / "o")
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
    assert config_errors(SFTConfig()) == {} and config_errors(PPOConfig()) == {}
