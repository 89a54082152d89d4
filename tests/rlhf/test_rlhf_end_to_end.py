"""SFT -> reward model -> PPO -> generate on a tiny model, through the public stage functions."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlhf_testkit import keyword_pairs, save_tiny_base

from rlhf.models import load_policy, load_reward_model
from rlhf.ppo import PPOConfig, train_ppo
from rlhf.reward import RewardConfig, train_reward_model
from rlhf.sampling import SamplingConfig, generate
from rlhf.sft import SFTConfig, train_sft

CPU = dict(precision="fp32", device="cpu")


def test_sft_reward_ppo_generate_in_under_a_minute(tmp_path):
    start = time.perf_counter()
    base = save_tiny_base(tmp_path / "base")
    pairs = keyword_pairs(96, 11)
    demos = [{"prompt": p["prompt"], "response": p["chosen"]} for p in pairs[:48]]
    sft = train_sft(SFTConfig(learning_rate=1e-2, epochs=2, batch_size=8, **CPU), demos, base, tmp_path / "sft")
    rm = train_reward_model(RewardConfig(learning_rate=2e-3, epochs=2, batch_size=16, **CPU), pairs,
                            sft.out_dir, tmp_path / "rm")
    prompts = [{"prompt": p["prompt"]} for p in pairs]
    steps = []
    ppo = train_ppo(PPOConfig(iterations=3, rollout_batch_size=8, mini_batch_size=4, ppo_epochs=2,
                              learning_rate=1e-3, sampling={"strategy": "multinomial", "max_new_tokens": 12}, **CPU),
                    prompts, sft.out_dir, rm.out_dir, tmp_path / "ppo", on_step=steps.append)
    model, tok = load_policy(ppo.out_dir)
    out = generate(model, tok, [[{"role": "user", "content": "the cat"}], "hello"],
                   SamplingConfig(strategy="top_p", top_p=0.9, max_new_tokens=12, seed=0), n=2)
    elapsed = time.perf_counter() - start

    assert [len(row) for row in out] == [2, 2]
    assert len(steps) == 3 and all(isinstance(m["score"], float) for m in steps)
    for result, stage in ((sft, "sft"), (rm, "reward_model"), (ppo, "ppo")):
        meta = json.loads((Path(result.out_dir) / "rlhf_config.json").read_text())
        assert meta["stage"] == stage and (Path(result.out_dir) / "metrics.json").is_file()
    assert json.loads((Path(ppo.out_dir) / "rlhf_config.json").read_text())["base"] == sft.out_dir
    assert load_reward_model(rm.out_dir).std > 0
    assert elapsed < 60, f"end-to-end took {elapsed:.1f}s"
