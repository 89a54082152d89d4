"""Models and checkpoints: load/save as plain HF directories, the score token, the value head."""

from __future__ import annotations

import json

import pytest
import torch
from rlhf_testkit import save_tiny_base, smol_dir, tiny_causal_lm, tiny_tokenizer

from rlhf.checkpoints import (
    data_summary,
    load_training_state,
    save_model_dir,
    save_training_state,
)
from rlhf.models import (
    REWARD_STATS_FILE,
    PolicyWithValue,
    last_token_index,
    load_policy,
    load_reward_model,
    score_pooling,
    sequence_scores,
    set_score_pooling,
    token_scores,
)


def test_saved_policy_is_a_plain_hf_directory(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = tiny_tokenizer()
    model = tiny_causal_lm(tok)
    records = [{"prompt": "a", "response": "b"}]
    out = save_model_dir(model, tok, tmp_path / "sft", stage="sft", config={"lr": 1.0},
                         metrics={"loss": 0.5}, summary=data_summary(records))
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "rlhf_config.json", "metrics.json",
            "data_summary.json"} <= names
    assert "chat_template.jinja" in names or "chat_template" in (out / "tokenizer_config.json").read_text()
    assert json.loads((out / "rlhf_config.json").read_text())["config"] == {"lr": 1.0}
    assert json.loads((out / "data_summary.json").read_text())["count"] == 1
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert AutoTokenizer.from_pretrained(out).chat_template == tok.chat_template
    policy, ptok = load_policy(out)
    assert ptok.pad_token_id != ptok.eos_token_id and not policy.training


def test_reward_model_round_trip_keeps_head_and_stats(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    rm = load_reward_model(base)
    # A fresh head is small: std 1/sqrt(hidden + 1).
    assert rm.model.score.weight.std().item() == pytest.approx(1 / 65**0.5, rel=0.3)
    assert (rm.mean, rm.std) == (0.0, 1.0)
    out = save_model_dir(rm.model, rm.tokenizer, tmp_path / "rm", stage="reward", config={}, metrics={},
                         summary={}, extra_json={REWARD_STATS_FILE: {"mean": 0.25, "std": 2.0}})
    again = load_reward_model(out)
    assert (again.mean, again.std) == (0.25, 2.0)
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    assert torch.allclose(sequence_scores(rm.model, ids, mask), sequence_scores(again.model, ids, mask))


def test_score_is_taken_at_the_last_real_token(tmp_path):
    rm = load_reward_model(save_tiny_base(tmp_path / "base"))
    tok = rm.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert pad != eos
    ids = torch.tensor([[5, 6, 7, eos, pad, pad], [5, 6, 7, 8, 9, eos]])
    mask = (ids != pad).long()
    assert last_token_index(mask).tolist() == [3, 5]
    per_token = token_scores(rm.model, ids, mask)
    scores = sequence_scores(rm.model, ids, mask)
    assert scores[0].item() == pytest.approx(per_token[0, 3].item())
    assert scores[1].item() == pytest.approx(per_token[1, 5].item())
    # Extra right padding does not change a score.
    alone = sequence_scores(rm.model, ids[:1, :4], mask[:1, :4])
    assert alone.item() == pytest.approx(scores[0].item(), abs=1e-5)


def test_a_mean_pooled_score_is_the_heads_mean_over_the_response(tmp_path):
    rm = load_reward_model(save_tiny_base(tmp_path / "base"))
    assert score_pooling(rm.model) == "last"  # what a model saved without the setting does
    set_score_pooling(rm.model, "mean")
    tok = rm.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ids = torch.tensor([[5, 6, 7, eos, pad, pad], [5, 6, 7, 8, 9, eos]])
    mask = (ids != pad).long()
    prompt_lens = torch.tensor([2, 3])
    per_token = token_scores(rm.model, ids, mask)
    scores = sequence_scores(rm.model, ids, mask, prompt_lens)
    assert scores[0].item() == pytest.approx(per_token[0, 2:4].mean().item(), abs=1e-6)
    assert scores[1].item() == pytest.approx(per_token[1, 3:6].mean().item(), abs=1e-6)
    alone = sequence_scores(rm.model, ids[:1, :4], mask[:1, :4], prompt_lens[:1])
    assert alone.item() == pytest.approx(scores[0].item(), abs=1e-5)  # padding does not count
    with pytest.raises(ValueError, match="prompt length"):
        sequence_scores(rm.model, ids, mask)
    with pytest.raises(ValueError, match="pooling must be one of"):
        set_score_pooling(rm.model, "max")
    out = save_model_dir(rm.model, tok, tmp_path / "rm", stage="reward", config={}, metrics={}, summary={})
    again = load_reward_model(out)
    assert score_pooling(again.model) == "mean"
    assert torch.allclose(sequence_scores(again.model, ids, mask, prompt_lens), scores, atol=1e-5)


def test_policy_with_value_matches_the_plain_forward_on_response_positions():
    tok = tiny_tokenizer()
    lm = tiny_causal_lm(tok)
    pv = PolicyWithValue(lm).eval()
    pad = tok.pad_token_id
    ids = torch.tensor([[pad, 5, 6, 7, 8, pad], [5, 6, 7, 8, 9, 10]])
    mask = (ids != pad).long()
    logits, values = pv(ids, mask, response_len=3)
    full = lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert logits.shape == (2, 3, len(tok)) and values.shape == (2, 3)
    assert torch.allclose(logits, full[:, 2:5], atol=1e-5)
    assert torch.all(values == 0)  # zero-initialised head


def test_training_state_round_trip(tmp_path):
    assert load_training_state(tmp_path) is None
    save_training_state(tmp_path, {"step": 3, "w": torch.ones(2)})
    state = load_training_state(tmp_path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.ones(2))


@pytest.mark.bundled_model
def test_bundled_smollm2_loads_with_its_own_pad():
    path = smol_dir()
    if path is None or not (path / "model.safetensors").is_file():
        pytest.skip("bundled SmolLM2-135M-Instruct not converted on this machine")
    model, tok = load_policy(path)
    assert tok.pad_token == "<|endoftext|>" and model.config.pad_token_id == tok.pad_token_id


def test_reward_model_saved_as_a_lora_adapter_loads_everywhere(tmp_path):
    """lora.merge=false once wrote a reward model that PPO, evaluation and the next round could not
    load (no config.json in an adapter directory)."""
    from rlhf_testkit import keyword_pairs

    from rlhf.ppo import PPOConfig, train_ppo
    from rlhf.reward import RewardConfig, train_reward_model

    base = save_tiny_base(tmp_path / "base")
    lora = {"r": 4, "alpha": 8, "merge": False}
    cfg = RewardConfig(learning_rate=5e-3, epochs=1, batch_size=8, precision="fp32", device="cpu", lora=lora)
    result = train_reward_model(cfg, keyword_pairs(32, 0), base, tmp_path / "rm", eval_pairs=keyword_pairs(16, 1))
    assert (tmp_path / "rm" / "adapter_config.json").is_file()
    rm = load_reward_model(result.out_dir)
    assert rm.std == pytest.approx(result.metrics["score_std"])
    # The loaded model reproduces the held-out scores the stage measured.
    from rlhf.data import encode_pairs
    from rlhf.reward import evaluate_pairs

    held, _ = encode_pairs(rm.tokenizer, keyword_pairs(16, 1), cfg.max_length, True)
    again = evaluate_pairs(rm.model, held, rm.tokenizer.pad_token_id, cfg, torch.device("cpu"))
    assert again["eval_margin"] == pytest.approx(result.metrics["eval_margin"], abs=1e-4)
    # PPO (with a critic from it) and the next round's reward model both start from it.
    ppo = PPOConfig(iterations=1, rollout_batch_size=4, mini_batch_size=4, ppo_epochs=1, precision="fp32",
                    device="cpu", critic="reward_model", advantage="gae", sampling={"strategy": "multinomial", "max_new_tokens": 4})
    assert train_ppo(ppo, [{"prompt": "the cat"}] * 4, base, result.out_dir, tmp_path / "ppo").out_dir
    nxt = train_reward_model(RewardConfig(max_steps=1, batch_size=4, eval_fraction=0, precision="fp32",
                                          device="cpu"), keyword_pairs(8, 2), result.out_dir, tmp_path / "rm2")
    assert load_reward_model(nxt.out_dir).model.score.weight.shape == (1, 64)


def test_a_policy_adapter_is_a_reward_model_base(tmp_path):
    from rlhf.lora import LoraOptions, apply_lora

    base = save_tiny_base(tmp_path / "base")
    policy, tok = load_policy(base)
    policy = apply_lora(policy, LoraOptions(r=4, alpha=8, merge=False))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    out = save_model_dir(policy, tok, tmp_path / "adapter", stage="ppo", config={}, metrics={}, summary={},
                         merge_lora=False)
    merged, _ = load_policy(out)
    rm = load_reward_model(out)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(rm.model.state_dict()[q], merged.state_dict()[q])
    assert not torch.allclose(merged.state_dict()[q], load_policy(base)[0].state_dict()[q])


def test_critic_from_the_reward_model_starts_in_normalised_units(tmp_path):
    from rlhf.models import RewardModel, critic_from_reward_model

    rm = load_reward_model(save_tiny_base(tmp_path / "base"))
    torch.nn.init.normal_(rm.model.score.weight, std=1.0)
    rm = RewardModel(rm.model, rm.tokenizer, mean=3.0, std=2.5)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    mask = torch.ones_like(ids)
    critic = critic_from_reward_model(rm)
    expected = (token_scores(rm.model, ids, mask) - 3.0) / 2.5
    assert torch.allclose(token_scores(critic, ids, mask), expected, atol=1e-5)
    assert critic is not rm.model and rm.model.score.bias is None  # the reward model is untouched


def test_value_and_reward_heads_run_in_fp32_under_bf16_autocast():
    tok = tiny_tokenizer()
    lm = tiny_causal_lm(tok)
    pv = PolicyWithValue(lm).eval()
    with torch.no_grad():
        pv.value_head.weight.normal_(std=1.0).add_(1.0)
        pv.value_head.bias.fill_(0.1234567)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    mask = torch.ones_like(ids)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, values = pv(ids, mask, response_len=3)
        hidden = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1][:, 2:5]
        only_values = pv.values(ids, mask, response_len=3)
    expected = hidden.float() @ pv.value_head.weight.float().T + pv.value_head.bias
    assert values.dtype == torch.float32
    assert torch.allclose(values, expected.squeeze(-1), atol=1e-5, rtol=1e-5)
    assert torch.allclose(only_values, values, atol=1e-5)
