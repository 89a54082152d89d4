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
    sequence_scores,
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
