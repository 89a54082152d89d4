"""PPO whose rollouts a real vLLM server samples (rollout_engine="vllm"): the run starts its own
engine on the starting policy, loads the LoRA adapter under a new name every iteration, and the
trainer recomputes the log-probs. If the engine kept sampling from an older adapter, its log-probs
of the sampled tokens would drift away from the trainer's as the weights move; they must not."""

from __future__ import annotations

import pytest

from tests.engine.fixtures import START_TIMEOUT, require_engine_venv

pytestmark = [pytest.mark.slow, pytest.mark.engine]

PROMPTS = [{"prompt": p} for p in ("hello world", "the quick brown fox", "two plus two", "a cat sat",
                                   "rain today", "good morning")]


def test_rloo_on_vllm_rollouts_samples_the_weights_being_trained(engine_tiny_model_dir, tmp_path, monkeypatch):
    require_engine_venv()
    from rlhf import rollout_engine
    from rlhf.ppo import PPOConfig, train_ppo
    from rlhf.scorers import SCORERS, register_scorer

    monkeypatch.setattr(rollout_engine, "ENGINE_TIMEOUT_S", START_TIMEOUT)
    names: list[str] = []
    real_sync = rollout_engine.EngineRollouts.sync

    def sync(self, model, iteration):
        real_sync(self, model, iteration)
        names.append(self.loaded)

    monkeypatch.setattr(rollout_engine.EngineRollouts, "sync", sync)
    # Shorter answers score higher: a signal the tiny random model can follow within a few steps.
    register_scorer("test-short", lambda: lambda prompt, response, reference: -float(len(response)))
    try:
        cfg = PPOConfig(iterations=4, rollout_batch_size=8, mini_batch_size=4, ppo_epochs=2, learning_rate=2e-2,
                        precision="fp32", device="cpu", advantage="rloo", samples_per_prompt=2, max_length=256,
                        lora={"r": 8, "alpha": 16}, rollout_engine="vllm", save_every=0,
                        sampling={"strategy": "multinomial", "temperature": 0.8, "max_new_tokens": 12},
                        rollout_engine_options={"enforce_eager": True, "kv_cache_space_gib": 1})
        result = train_ppo(cfg, PROMPTS, engine_tiny_model_dir, None, tmp_path / "ppo", scorer="test-short")
    finally:
        del SCORERS["test-short"]
    history = result.history
    assert len(history) == 4 and all(m["rollout_engine"] == "vllm" for m in history)
    # The trainer's weights moved away from the base ...
    assert history[-1]["kl"] > 0.05, [m["kl"] for m in history]
    # ... and the engine sampled from them each time: its log-probs equal the trainer's recomputation.
    gaps = [m["engine_logprob_gap"] for m in history]
    assert max(gaps) < 1e-3, gaps
    # One adapter name per iteration, never reused (stale prefix-cache blocks, vllm#42125).
    assert len(names) == 4 and len(set(names)) == 4
    assert all(m["time_sync_s"] > 0 and m["response_tokens"] > 0 for m in history)
    assert not list(tmp_path.glob(".rollout-adapters-*")), "the adapters and the engine are cleaned up"
