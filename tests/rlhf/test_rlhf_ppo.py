"""PPO on a tiny model: learning a verifiable reward with bounded KL, resume, LoRA reference, critic
from the reward model; and the scorers."""

from __future__ import annotations

import random

import pytest
import torch
from rlhf_testkit import WORDS, save_tiny_base

from rlhf.checkpoints import STATE_FILE, state_dir
from rlhf.models import load_policy
from rlhf.ppo import KLController, PPOConfig, train_ppo
from rlhf.scorers import SCORERS, Contains, ExactMatch, NumericAnswer, RegexMatch, get_scorer, register_scorer
from rlhf.sft import SFTConfig, train_sft

OTHER = [w for w in WORDS if w != "yes"]


def test_scorers():
    assert ExactMatch()("q", "  Paris. ", "paris") == 1.0
    assert ExactMatch()("q", "Lyon", "paris") == 0.0
    assert NumericAnswer()("2+2?", "so the answer is 4.", "4") == 1.0
    assert NumericAnswer()("q", "1,234.5 total", "1234.5") == 1.0
    assert NumericAnswer()("q", "5", "4") == 0.0 and NumericAnswer()("q", "none", "4") == 0.0
    assert RegexMatch(r"^yes")("q", "Yes indeed", None) == 1.0
    assert RegexMatch()("q", "code 42", r"\d+") == 1.0
    assert Contains("yes")("q", "oh YES", None) == 1.0
    assert isinstance(get_scorer({"scorer": "numeric"}), NumericAnswer)
    assert get_scorer({"name": "regex", "pattern": "a+"})("q", "baa", None) == 1.0
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("nope")
    register_scorer("always_one", lambda: (lambda p, r, ref: 1.0))
    assert get_scorer("always_one")("q", "x", None) == 1.0
    del SCORERS["always_one"]


def test_adaptive_kl_controller_moves_towards_target():
    ctl = KLController(0.1, target=6.0, horizon=100)
    ctl.update(12.0, 10)  # KL too high: beta grows (error clipped at +0.2)
    assert ctl.coef == pytest.approx(0.1 * 1.02)
    ctl.update(0.0, 10)
    assert ctl.coef == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = KLController(0.1, None, 100)
    fixed.update(100.0, 10)
    assert fixed.coef == 0.1


@pytest.fixture(scope="module")
def sft_policy(tmp_path_factory):
    """A tiny model taught to answer with two or three words, half the time including "yes"."""
    tmp = tmp_path_factory.mktemp("ppo")
    base = save_tiny_base(tmp / "base")
    rng = random.Random(0)
    data = []
    for i in range(64):
        words = rng.sample(OTHER, 2)
        if i % 2 == 0:
            words.insert(rng.randrange(3), "yes")
        data.append({"prompt": " ".join(rng.sample(OTHER, 3)), "response": " ".join(words)})
    cfg = SFTConfig(learning_rate=1e-2, epochs=6, batch_size=8, eval_fraction=0, precision="fp32", device="cpu")
    return train_sft(cfg, data, base, tmp / "sft").out_dir


def prompts(n: int = 64) -> list[dict]:
    rng = random.Random(1)
    return [{"prompt": " ".join(rng.sample(OTHER, 3))} for _ in range(n)]


def ppo_config(**overrides) -> PPOConfig:
    kwargs = dict(iterations=20, rollout_batch_size=32, mini_batch_size=16, ppo_epochs=2, learning_rate=3e-3,
                  precision="fp32", device="cpu", kl_coef=0.05, lora=None,
                  sampling={"strategy": "multinomial", "temperature": 1.0, "max_new_tokens": 8})
    kwargs.update(overrides)
    return PPOConfig(**kwargs)


YES = {"scorer": "contains", "text": "yes"}


@pytest.mark.slow
def test_ppo_raises_a_verifiable_reward_with_bounded_kl(sft_policy, tmp_path):
    seen = []
    result = train_ppo(ppo_config(advantage="gae"), prompts(), sft_policy, None, tmp_path / "ppo", scorer=YES,
                       on_step=seen.append)
    scores = [m["score"] for m in result.history]
    assert len(seen) == 20 and not result.cancelled
    assert sum(scores[-5:]) / 5 >= sum(scores[:3]) / 3 + 0.25, scores
    assert max(m["kl"] for m in result.history) < 10
    first = result.history[0]
    assert abs(first["kl"]) < 1e-4  # the policy starts as the reference
    assert first["logprob_gap"] < 1e-4  # recomputed log-probs match the sampler's
    for key in ("objective", "entropy", "approx_kl", "clip_frac", "value_loss", "response_length", "eos_rate",
                "samples", "alarms", "time_generate_s", "time_score_s", "time_update_s"):
        assert key in first
    assert not state_dir(tmp_path / "ppo").exists()  # the finished model supersedes the resumable state
    model, tok = load_policy(result.out_dir)
    assert tok.pad_token_id != tok.eos_token_id


@pytest.mark.slow
def test_rloo_raises_a_verifiable_reward_without_a_critic(sft_policy, tmp_path):
    seen = []
    cfg = ppo_config(advantage="rloo", samples_per_prompt=4)
    result = train_ppo(cfg, prompts(), sft_policy, None, tmp_path / "rloo", scorer=YES, on_step=seen.append)
    scores = [m["score"] for m in result.history]
    assert sum(scores[-5:]) / 5 >= sum(scores[:3]) / 3 + 0.25, scores
    assert max(m["kl"] for m in result.history) < 10
    # 32 responses an iteration are 8 prompts x 4: each prompt's samples are logged together.
    assert all(m["batch_size"] == 32 for m in seen)
    assert not {"value_loss", "value_clip_frac", "value_mean"} & set(seen[0]), "no critic, no value rows"
    shown = [s["prompt"] for s in seen[0]["samples"]]
    assert len(shown) == 2 and shown[0] == shown[1]


def test_rloo_advantages_compare_the_responses_to_one_prompt():
    from rlhf.rollout import Rollout, add_advantages

    B, T = 4, 3
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    logprobs = torch.zeros(B, T)
    rollout = Rollout(torch.zeros(B, 5, dtype=torch.long), torch.ones(B, 5), torch.zeros(B, T, dtype=torch.long),
                      mask, logprobs, logprobs.clone(), torch.zeros(B, T), torch.tensor([1.0, 0.0, 5.0, 5.0]),
                      torch.zeros(B), ["a"] * B, torch.ones(B, dtype=torch.bool), 0.0, {})
    add_advantages(rollout, kl_coef=0.1, kl_estimator="k1", gamma=1.0, lam=0.95, whiten_rewards=True,
                   estimator="rloo", group=2)
    adv = rollout.advantages
    # One advantage on every token of a response; the better answer to prompt 1 is above its
    # sibling, prompt 2's equal answers are level (the same value after whitening).
    for i in range(B):
        assert torch.unique(adv[i][mask[i].bool()]).numel() == 1
    assert adv[0, 0] > 0 > adv[1, 0] and adv[2, 0] == pytest.approx(adv[3, 0].item())
    assert torch.equal(rollout.returns, torch.zeros(B, T)) and (adv[~mask.bool()] == 0).all()


@pytest.mark.parametrize("overrides, message", [
    ({"advantage": "rloo", "samples_per_prompt": 1}, "must be >= 2"),
    ({"advantage": "rloo", "rollout_batch_size": 1, "mini_batch_size": 1}, "must be >= 2"),
    ({"advantage": "rloo", "samples_per_prompt": 3}, "not a multiple of samples_per_prompt"),
    ({"advantage": "rloo", "samples_per_prompt": 2, "critic": "reward_model"}, "learns no critic"),
    ({"advantage": "vtrace"}, "advantage must be"),
    ({"rollout_engine": "sglang"}, "rollout_engine must be"),
    ({"rollout_engine": "vllm", "rollout_engine_url": "file:///etc/passwd"}, "must be an http"),
    ({"rollout_engine": "vllm", "rollout_engine_options": {"gpu_layers": 3}}, "unknown rollout_engine_options"),
])
def test_ppo_refuses_advantage_settings_that_cannot_work(overrides, message):
    with pytest.raises(ValueError, match=message):
        ppo_config(**{"rollout_batch_size": 8, **overrides}).validate()


def test_rloo_is_the_default_with_four_responses_a_prompt_when_they_fit():
    assert PPOConfig().advantage == "rloo" and PPOConfig().group_size() == 4
    sizes = {n: PPOConfig(rollout_batch_size=n).group_size() for n in (2, 4, 6, 8, 5, 7)}
    assert sizes == {2: 2, 4: 4, 6: 3, 8: 4, 5: 5, 7: 7}
    assert PPOConfig(advantage="gae").group_size() == 1 and PPOConfig(samples_per_prompt=2).group_size() == 2


def test_rollouts_on_vllm_need_a_lora_policy(sft_policy, tmp_path):
    with pytest.raises(ValueError, match="LoRA adapter each iteration"):
        train_ppo(ppo_config(rollout_batch_size=8, rollout_engine="vllm", lora=None), prompts(), sft_policy, None,
                  tmp_path / "ppo", scorer=YES)


def test_ppo_resumes_exactly_where_it_stopped(sft_policy, tmp_path):
    cfg = ppo_config(iterations=4, rollout_batch_size=8, mini_batch_size=4, save_every=0)
    straight = train_ppo(cfg, prompts(), sft_policy, None, tmp_path / "straight", scorer=YES)

    calls = []
    cut = train_ppo(cfg, prompts(), sft_policy, None, tmp_path / "resumed", scorer=YES, on_step=calls.append,
                    should_stop=lambda: len(calls) >= 2)
    assert cut.cancelled and len(cut.history) == 2
    assert (state_dir(tmp_path / "resumed") / STATE_FILE).is_file()
    assert not (tmp_path / "resumed").exists()  # no half-made model directory
    resumed = train_ppo(cfg, prompts(), sft_policy, None, tmp_path / "resumed", scorer=YES, on_step=calls.append)
    assert [m["iteration"] for m in calls] == [1, 2, 3, 4]
    assert [m["score"] for m in resumed.history] == [m["score"] for m in straight.history]
    a, _ = load_policy(straight.out_dir)
    b, _ = load_policy(resumed.out_dir)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_ppo_with_lora_uses_the_base_as_reference(sft_policy, tmp_path):
    cfg = ppo_config(iterations=2, rollout_batch_size=8, mini_batch_size=8, learning_rate=1e-2,
                     lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    result = train_ppo(cfg, prompts(), sft_policy, None, tmp_path / "ppo", scorer=YES)
    assert abs(result.history[0]["kl"]) < 1e-4  # adapter starts at zero: policy == base
    assert result.history[1]["kl"] != 0.0
    merged, _ = load_policy(result.out_dir)
    base, _ = load_policy(sft_policy)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q], base.state_dict()[q])
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(merged.state_dict()[k], base.state_dict()[k])


def test_ppo_with_reward_model_and_its_critic(sft_policy, tmp_path):
    from rlhf.models import load_reward_model

    rm = load_reward_model(sft_policy)
    rm_dir = tmp_path / "rm"
    rm.model.save_pretrained(rm_dir)
    rm.tokenizer.save_pretrained(rm_dir)
    cfg = ppo_config(iterations=2, rollout_batch_size=8, mini_batch_size=4, critic="reward_model", advantage="gae")
    result = train_ppo(cfg, prompts(), sft_policy, rm_dir, tmp_path / "ppo")
    assert len(result.history) == 2 and result.out_dir
    with pytest.raises(ValueError, match="exactly one"):
        train_ppo(cfg, prompts(), sft_policy, rm_dir, tmp_path / "x", scorer=YES)


@pytest.mark.parametrize("sampling", [
    {"strategy": "top_k", "top_k": 20}, {"strategy": "top_p", "top_p": 0.9}, {"strategy": "greedy"}])
def test_ppo_refuses_rollouts_that_do_not_sample_the_policy(sampling, tmp_path):
    cfg = PPOConfig(sampling=sampling)
    with pytest.raises(ValueError, match="multinomial"):
        cfg.validate()
    with pytest.raises(ValueError, match="multinomial"):
        train_ppo(cfg, prompts(4), tmp_path / "unused", None, tmp_path / "ppo", scorer=YES)


def test_ppo_accepts_plain_sampling_at_a_temperature():
    cfg = PPOConfig(sampling={"strategy": "multinomial", "temperature": 0.7}).validate().sampling_config()
    assert (cfg.strategy, cfg.temperature) == ("multinomial", 0.7)
    # top_p at 1 is plain sampling (round configs written before this rule say so).
    assert PPOConfig(sampling={"strategy": "top_p", "top_p": 1.0}).sampling_config().strategy == "multinomial"


def test_adaptive_kl_horizon_scales_with_the_run():
    cfg = PPOConfig(iterations=20, rollout_batch_size=8, kl_target=6.0)
    assert cfg.horizon() == 32
    ctl = KLController(0.05, cfg.kl_target, cfg.horizon())
    for _ in range(cfg.iterations):
        ctl.update(30.0, cfg.rollout_batch_size)  # KL far above target all run long
    assert ctl.coef > 0.05 * 2  # beta can move within one run (10,000 samples moved it by 0.3%)
    assert PPOConfig(kl_horizon=500).horizon() == 500


def test_lora_is_the_cpu_default_and_full_weights_the_gpu_one():
    cfg = PPOConfig()
    assert cfg.lora_for(torch.device("cpu")).target_modules == "all-linear"
    assert cfg.lora_for(torch.device("cuda")) is None
    assert cfg.learning_rate_for(cfg.lora_for(torch.device("cpu"))) > cfg.learning_rate_for(None)
    assert PPOConfig(lora=None).lora_for(torch.device("cpu")) is None


def test_missing_eos_penalty_is_off_by_default_and_replaces_cut_scores_when_set(sft_policy, tmp_path):
    """Off by default: with rollouts shorter than the answers (most chat answers at 64 tokens),
    the penalty would replace nearly every score by the same number."""
    assert PPOConfig().missing_eos_penalty is None
    always = {"name": "regex", "pattern": "^"}  # every response scores 1.0
    short = {"strategy": "multinomial", "temperature": 1.0, "max_new_tokens": 1}  # almost all cut
    for penalty in (None, -1.0):
        m = train_ppo(ppo_config(iterations=1, missing_eos_penalty=penalty, sampling=short), prompts(),
                      sft_policy, None, tmp_path / f"ppo-{penalty}", scorer=always).history[0]
        assert m["score"] == 1.0 and m["eos_rate"] < 0.5
        expected = 1.0 if penalty is None else m["eos_rate"] - (1 - m["eos_rate"])
        assert m["reward"] == pytest.approx(expected)
