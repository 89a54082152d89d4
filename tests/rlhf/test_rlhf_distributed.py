"""Every stage under `accelerate launch` with two processes (DDP on CPU, gloo): SFT, the reward model
and DPO give what one process gives (same steps, same global batch, weights equal within float
noise, held-out numbers within tolerance) and write exactly one checkpoint saying how many processes
took part; PPO on two processes is stopped through its stop file, keeps its state, and resumes, also
on another number of processes; the logged numbers are global."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rlhf_testkit import REPO, keyword_pairs, save_tiny_base

from rlhf.checkpoints import STATE_FILE, load_training_state, partial_prefix, state_dir
from rlhf.launch import launch_command
from rlhf.models import load_policy, load_reward_model
from tests.rlhf.distributed_stages import STAGES

pytestmark = pytest.mark.slow
CFG = dict(precision="fp32", device="cpu", learning_rate=2e-3, batch_size=5, epochs=2, max_length=64,
           eval_fraction=0.25, save_every=0, seed=1)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    return done


def _data() -> dict:
    pairs = keyword_pairs(46, seed=3)
    return {"sft": [{"prompt": p["prompt"], "response": p["chosen"]} for p in pairs], "reward": pairs, "dpo": pairs}


def _weights(stage: str, path: Path) -> dict[str, torch.Tensor]:
    return (load_reward_model(path).model if stage == "reward" else load_policy(path)[0]).state_dict()


def test_supervised_stages_give_on_two_processes_what_they_give_on_one(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    data = _data()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": CFG, "data": data, "base": str(base), "out": str(tmp_path / "two")}))
    launched = _run(launch_command([str(REPO / "tests/rlhf/distributed_stages.py"), str(spec)], processes=2,
                                   config="ddp_cpu", module=None))
    assert launched.returncode == 0, launched.stderr[-3000:]
    for stage, (cls, train) in STAGES.items():
        one = train(cls(**CFG), data[stage], base, tmp_path / "one" / stage)
        out = tmp_path / "two" / stage
        metrics = json.loads((out / "metrics.json").read_text())
        summary = json.loads((out / "data_summary.json").read_text())
        # Exactly one checkpoint, whole: no second writer's directory, no leftovers, no stale state.
        assert sorted(p.name for p in out.parent.iterdir()) == sorted(STAGES), stage
        assert not list(out.parent.glob(partial_prefix(out) + "*")) and not state_dir(out).exists()
        assert (summary["processes"], summary["engine"]) == (2, "ddp"), stage
        assert metrics["processes"] == 2 and metrics["samples_seen"] == 2 * summary["train"] == one.metrics["samples_seen"]
        # The same global batches: the logged batch size is the global one, the steps are the same.
        assert metrics["batch_size"] == one.history[-1]["batch_size"] and metrics["step"] == one.metrics["step"]
        for key in ("loss", "eval_loss", "eval_accuracy", "eval_margin"):
            if key in one.metrics:
                assert metrics[key] == pytest.approx(one.metrics[key], rel=1e-3, abs=1e-4), (stage, key)
        a, b = _weights(stage, Path(one.out_dir)), _weights(stage, out)
        for name, tensor in a.items():
            assert torch.allclose(tensor, b[name], atol=1e-4), (stage, name)
    assert json.loads((tmp_path / "two/reward/metrics.json").read_text())["eval_accuracy"] >= 0.7


PPO = ["--scorer", '{"scorer": "contains", "text": "yes"}', "--set", "precision=fp32", "--set", "device=cpu",
       "--set", "iterations=5", "--set", "rollout_batch_size=8", "--set", "mini_batch_size=3", "--set",
       "max_length=64", "--set", "save_every=1", "--set", "learning_rate=1e-3",
       "--set", 'sampling={"strategy": "multinomial", "temperature": 1.0, "max_new_tokens": 8}']


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_ppo_on_two_processes_stops_on_its_stop_file_and_resumes(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": w}) + "\n" for w in
                               ["the cat", "a dog", "yes or no", "hello", "one two", "the park", "trees", "good"]))
    out, stop, events = tmp_path / "ppo", tmp_path / "stop", tmp_path / "events.jsonl"
    args = ["ppo", "--data", str(prompts), "--policy", str(base), "--out", str(out), "--stop-file", str(stop),
            "--events", str(events), *PPO]
    proc = subprocess.Popen(launch_command(args, processes=2, config="ddp_cpu"), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not any(e["event"] == "step" for e in _events(events)) and proc.poll() is None:
        assert time.monotonic() < deadline, "no step within 240 s"
        time.sleep(0.1)
    stop.touch()  # what the service's runner does on a cancel
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]  # a launched rank exits 0 on a cancel (torchrun's rule)
    assert not out.exists()
    state = load_training_state(out)
    assert (state_dir(out) / STATE_FILE).is_file() and (state["processes"], state["engine"]) == (2, "ddp")
    steps = [e["metrics"] for e in _events(events) if e["event"] == "step"]
    assert 1 <= len(steps) < 5 and state["iteration"] == len(steps)
    assert all(s["processes"] == 2 and s["batch_size"] == 8 for s in steps), "global batch, global metrics"
    assert [s["samples_seen"] for s in steps] == [8 * (i + 1) for i in range(len(steps))]
    assert all(0.0 <= s["eos_rate"] <= 1.0 and s["response_tokens"] <= 8 * 8 for s in steps)
    assert [e for e in _events(events) if e["event"] == "result"][-1]["cancelled"] is True
    # Resumed on one process (the plain path): a DDP state holds whole weights, so any count may go on.
    stop.unlink()
    resumed = _run([sys.executable, "-m", "rlhf", *args])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = [e["metrics"] for e in _events(events) if e["event"] == "step"][len(steps):]
    assert [s["step"] for s in after] == list(range(len(steps) + 1, 6)) and all(s["processes"] == 1 for s in after)
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["samples_seen"] == 40 and summary["processes"] == 1
    assert len(json.loads((out / "history.json").read_text())) == 5 and not state_dir(out).exists()
