"""SFT and reward-model stages on tiny models: masking, one step moves every parameter, learning,
callbacks and cancellation."""

from __future__ import annotations

import random

import pytest
import torch
from rlhf_testkit import WORDS, keyword_pairs, save_tiny_base, tiny_causal_lm, tiny_tokenizer

from rlhf.data import IGNORE, collate_pairs, collate_sft, encode_pair, encode_pair_side
from rlhf.losses import pairwise_loss
from rlhf.models import load_reward_model
from rlhf.reward import RewardConfig, pair_scores, train_reward_model
from rlhf.sampling import SamplingConfig, generate
from rlhf.sft import SFTConfig, sft_loss, train_sft
from rlhf.training import TrainConfig, make_optimizer, optimizer_step

FAST = dict(precision="fp32", device="cpu")


def test_sft_labels_cover_only_the_response_and_its_eos():
    tok = tiny_tokenizer()
    a = encode_pair_side(tok, "the cat", "sat", 64, wrap_plain=True)
    b = encode_pair_side(tok, "hello world please", "yes no", 64, wrap_plain=True)
    batch = collate_sft([a, b], tok.pad_token_id)
    labels, ids = batch["labels"], batch["input_ids"]
    for row, enc in enumerate((a, b)):
        n = len(enc.input_ids)
        assert (labels[row, : enc.prompt_len] == IGNORE).all()
        assert labels[row, enc.prompt_len:n].tolist() == ids[row, enc.prompt_len:n].tolist()
        assert labels[row, n - 1] == tok.eos_token_id  # EOS is learned, not masked as padding
        assert (labels[row, n:] == IGNORE).all()
    assert tok.decode(ids[0, a.prompt_len:len(a.input_ids) - 1]) == "sat"


def _changed_all(model, step):
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = make_optimizer(params, TrainConfig(learning_rate=1e-3), total_steps=10)
    optimizer_step(step(), params, opt, sched, max_grad_norm=1.0)
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"


def test_one_sft_step_changes_every_parameter():
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tok).train()
    batch = collate_sft([encode_pair_side(tok, "the cat", "sat on a mat", 64, True)], tok.pad_token_id)
    _changed_all(model, lambda: sft_loss(model, batch, torch.device("cpu")))


def test_one_reward_step_changes_every_parameter(tmp_path):
    rm = load_reward_model(save_tiny_base(tmp_path / "base"), eval_mode=False)
    tok = rm.tokenizer
    pair = encode_pair(tok, {"prompt": "q", "chosen": "good", "rejected": "bad"}, 64, True)
    batch = collate_pairs([pair, pair], tok.pad_token_id)

    def step():
        c, r = pair_scores(rm.model, batch, torch.device("cpu"))
        return pairwise_loss(c, r)

    _changed_all(rm.model, step)


def test_sft_learns_to_answer_and_stop(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    data = [{"prompt": " ".join(random.Random(i).sample(WORDS, 3)), "response": "yes please"} for i in range(32)]
    seen = []
    cfg = SFTConfig(learning_rate=1e-2, epochs=6, batch_size=8, eval_fraction=0.125, **FAST)
    result = train_sft(cfg, data, base, tmp_path / "sft", on_step=seen.append)
    assert not result.cancelled and len(seen) == len(result.history) == 6 * 4
    assert {"step", "total_steps", "loss", "lr", "tokens_per_s"} <= set(seen[0])
    assert result.history[-1]["loss"] < 0.3 * result.history[0]["loss"]
    assert result.metrics["eval_loss"] < 0.5
    from rlhf.models import load_policy

    model, tok = load_policy(result.out_dir)
    out = generate(model, tok, [[{"role": "user", "content": "the dog ran"}]],
                   SamplingConfig(strategy="greedy", max_new_tokens=10))[0][0]
    assert out.text == "yes please" and out.finish_reason == "stop"


def test_cancelled_stage_returns_early_and_writes_nothing(tmp_path):
    base = save_tiny_base(tmp_path / "base")
    data = [{"prompt": "a", "response": "b"}] * 40
    calls = []
    result = train_sft(SFTConfig(batch_size=4, **FAST), data, base, tmp_path / "sft",
                       on_step=calls.append, should_stop=lambda: len(calls) >= 2)
    assert result.cancelled and result.out_dir is None and len(result.history) == 2
    assert not (tmp_path / "sft").exists()


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_reward_model_learns_a_synthetic_preference(tmp_path, pooling):
    from rlhf.models import score_pooling, score_texts

    base = save_tiny_base(tmp_path / "base")
    cfg = RewardConfig(learning_rate=2e-3, epochs=2, batch_size=16, pooling=pooling, **FAST)
    result = train_reward_model(cfg, keyword_pairs(320, 0), base, tmp_path / "rm",
                                eval_pairs=keyword_pairs(100, 1))
    assert result.metrics["eval_accuracy"] >= 0.9
    assert result.metrics["eval_margin"] > 0
    for key in ("eval_reward_mean", "eval_reward_std", "eval_reward_min", "eval_reward_max"):
        assert key in result.metrics
    rm = load_reward_model(result.out_dir)
    assert rm.std == pytest.approx(result.metrics["score_std"]) and rm.std > 0
    # The saved model scores pairs the same way after a round trip.
    pair = encode_pair(rm.tokenizer, keyword_pairs(1, 7)[0], 128, True)
    c, r = pair_scores(rm.model, collate_pairs([pair], rm.tokenizer.pad_token_id), torch.device("cpu"))
    assert c.item() > r.item()
    # The pooling is saved with the model, and scoring texts (as PPO does) pools the same way.
    assert score_pooling(rm.model) == pooling
    record = keyword_pairs(1, 7)[0]
    texts = score_texts(rm, [record["prompt"]] * 2, [record["chosen"], record["rejected"]], max_length=128)
    assert texts.tolist() == pytest.approx([c.item(), r.item()], abs=1e-5)


def test_sft_with_lora_saves_an_adapter_or_merged_weights(tmp_path):
    from rlhf.models import load_policy

    base = save_tiny_base(tmp_path / "base")
    data = [{"prompt": "say yes", "response": "yes"}] * 8
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "merge": False}
    cfg = SFTConfig(learning_rate=1e-2, batch_size=4, eval_fraction=0, lora=lora, **FAST)
    adapter = train_sft(cfg, data, base, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    lora["merge"] = True
    merged = train_sft(SFTConfig(learning_rate=1e-2, batch_size=4, eval_fraction=0, lora=lora, **FAST), data, base,
                       tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    a, _ = load_policy(adapter.out_dir)  # merged on load
    m, _ = load_policy(merged.out_dir)
    b, _ = load_policy(base)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(a.state_dict()[q], m.state_dict()[q], atol=1e-6)
    assert not torch.equal(m.state_dict()[q], b.state_dict()[q])


def test_reward_eval_holds_out_prompts_and_reports_consensus(tmp_path):
    from test_rlhf_data import ranking_pairs

    base = save_tiny_base(tmp_path / "base")
    rows = ranking_pairs(40, 2)
    cfg = RewardConfig(learning_rate=1e-3, max_steps=1, batch_size=8, eval_fraction=0.25, **FAST)
    m = train_reward_model(cfg, rows, base, tmp_path / "rm").metrics
    assert m["eval_pairs"] == 10 * 6 * 2 and m["train_pairs"] == 30 * 6 * 2
    # Two annotators who each ranked at random agree on about half the pairs: the rest tie.
    assert 0 < m["eval_consensus_pairs"] < 60
    assert "eval_accuracy" in m and "eval_note" not in m
    few = train_reward_model(cfg, rows[:24], base, tmp_path / "few").metrics  # 2 prompts -> 1 held out
    assert few["eval_pairs"] == 12 and "eval_accuracy" in few
    tiny = train_reward_model(cfg, ranking_pairs(2, 1), base, tmp_path / "tiny").metrics
    assert tiny["eval_pairs"] == 6 and "eval_accuracy" not in tiny and "too few" in tiny["eval_note"]


def test_default_reward_loss_puts_no_margin_on_the_weakest_preference(tmp_path):
    # Pairs the service exports carry margin = groups apart - 1, and margins are off by default: the
    # first loss of a fresh head is ~log 2 whatever the margins.
    base = save_tiny_base(tmp_path / "base")
    pairs = keyword_pairs(16, 0)
    losses = []
    for margin in (0, 1, 3):
        cfg = RewardConfig(learning_rate=0.0, max_steps=1, batch_size=16, eval_fraction=0, **FAST)
        res = train_reward_model(cfg, [{**p, "margin": margin} for p in pairs], base, tmp_path / f"m{margin}")
        losses.append(res.history[0]["loss"])
    assert losses[0] == pytest.approx(losses[1]) == pytest.approx(losses[2])
    assert losses[0] == pytest.approx(0.693, abs=0.05)
    assert not RewardConfig().use_margin


def test_stages_train_with_dropout_off(tmp_path):
    from rlhf_testkit import tiny_config
    from transformers import LlamaForCausalLM

    from rlhf.stage import stage_start

    tok = tiny_tokenizer()
    model = LlamaForCausalLM(tiny_config(tok, attention_dropout=0.5))
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    for head in ("lm", "score"):
        stage = stage_start(SFTConfig(**FAST), tmp_path / "base", head=head)
        ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
        a = stage.model(input_ids=ids).logits
        b = stage.model(input_ids=ids).logits
        assert torch.equal(a, b), head
        assert a.requires_grad  # still trainable
