"""Sampling: filters against hand-computed distributions, frequencies, and the batched decoder."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from rlhf_testkit import tiny_causal_lm, tiny_tokenizer

from rlhf.sampling import (
    SamplingConfig,
    filter_logits,
    generate,
    generate_stream,
    generate_tokens,
    sample_next,
    top_k_filter,
    top_p_filter,
)


def probs_of(logits: torch.Tensor) -> list[float]:
    return logits.softmax(-1).squeeze(0).tolist()


P = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = P.log()


@pytest.mark.parametrize(
    ("field", "value"),
    [("strategy", "beam"), ("temperature", 0.0), ("top_k", 0), ("top_p", 1.5), ("max_new_tokens", 0),
     ("stop", [""]), ("seed", "x")],
)
def test_validate_names_the_bad_field(field, value):
    strategy = {"top_k": "top_k", "top_p": "top_p"}.get(field, "top_p")
    cfg = SamplingConfig(**{"strategy": strategy, field: value})
    with pytest.raises(ValueError, match=field):
        cfg.validate()


def test_top_p_keeps_smallest_set_reaching_p():
    # 0.5 + 0.3 reaches 0.8 exactly: two tokens, renormalised.
    assert probs_of(top_p_filter(LOGITS, 0.8)) == pytest.approx([0.625, 0.375, 0, 0])
    assert probs_of(top_p_filter(LOGITS, 0.81)) == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])
    assert probs_of(top_p_filter(LOGITS, 0.5)) == pytest.approx([1, 0, 0, 0])
    assert probs_of(top_p_filter(LOGITS, 0.01)) == pytest.approx([1, 0, 0, 0])  # top token always stays
    assert probs_of(top_p_filter(LOGITS, 1.0)) == pytest.approx(P[0].tolist())


def test_top_p_works_on_unsorted_rows():
    logits = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.3, 0.15, 0.05, 0.5]]).log()
    kept = top_p_filter(logits, 0.8).softmax(-1)
    assert kept[0].tolist() == pytest.approx([0, 0.625, 0, 0.375])
    assert kept[1].tolist() == pytest.approx([0.375, 0, 0, 0.625])


def test_top_k():
    assert probs_of(top_k_filter(LOGITS, 2)) == pytest.approx([0.625, 0.375, 0, 0])
    assert probs_of(top_k_filter(LOGITS, 1)) == pytest.approx([1, 0, 0, 0])
    assert probs_of(top_k_filter(LOGITS, 10)) == pytest.approx(P[0].tolist())


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    cfg = SamplingConfig(strategy="multinomial", temperature=0.5)
    z = [math.exp(2 * x) for x in (1.0, 2.0, 3.0)]
    assert probs_of(filter_logits(logits, cfg)) == pytest.approx([x / sum(z) for x in z])
    # Temperature applies before top-p: at T=2 the distribution is flatter, so top-p keeps more.
    cold = filter_logits(LOGITS, SamplingConfig(strategy="top_p", top_p=0.8, temperature=0.5))
    hot = filter_logits(LOGITS, SamplingConfig(strategy="top_p", top_p=0.8, temperature=2.0))
    assert int(torch.isfinite(cold).sum()) == 2 and int(torch.isfinite(hot).sum()) == 3


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (SamplingConfig(strategy="multinomial"), [0.5, 0.3, 0.15, 0.05]),
        (SamplingConfig(strategy="top_k", top_k=2), [0.625, 0.375, 0, 0]),
        (SamplingConfig(strategy="top_p", top_p=0.9), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]),
        (SamplingConfig(strategy="greedy"), [1, 0, 0, 0]),
    ],
)
def test_sampling_frequencies(cfg, expected):
    n = 40_000
    gen = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_next(LOGITS.expand(n, -1), cfg, gen)
    freq = torch.bincount(tokens, minlength=4).float() / n
    assert freq.tolist() == pytest.approx(expected, abs=0.01)
    # Log-probs are of the unfiltered distribution (what PPO recomputes).
    assert logprobs.exp().tolist() == pytest.approx(P[0][tokens].tolist(), rel=1e-5)


class ScriptedLM(torch.nn.Module):
    """Emits a fixed token sequence per row (as one-hot logits), whatever the input."""

    def __init__(self, scripts: list[list[int]], vocab: int):
        super().__init__()
        self.scripts, self.vocab = scripts, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids, cache=None, use_cache=True):
        step = 0 if cache is None else cache + 1
        logits = torch.full((len(self.scripts), input_ids.size(1), self.vocab), -1e4)
        for row, script in enumerate(self.scripts):
            logits[row, -1, script[min(step, len(script) - 1)]] = 0.0
        return SimpleNamespace(logits=logits, cache=step)


def test_decoder_truncates_after_first_eos():
    eos, pad = 9, 0
    lm = ScriptedLM([[3, 4, eos, 5, 6], [3, 4, 5, 6, 7]], vocab=10)
    batch = generate_tokens(lm, [[1, 2], [1]], SamplingConfig(strategy="greedy", max_new_tokens=5),
                            pad_id=pad, eos_ids=[eos])
    assert batch.prompt_ids.tolist() == [[1, 2], [pad, 1]]
    assert batch.prompt_mask.tolist() == [[1, 1], [0, 1]]
    assert batch.response_ids.tolist() == [[3, 4, eos, pad, pad], [3, 4, 5, 6, 7]]
    assert batch.response_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.ended_with_eos.tolist() == [True, False]


def test_decoder_stops_when_every_row_has_ended():
    lm = ScriptedLM([[3, 9], [9]], vocab=10)
    batch = generate_tokens(lm, [[1], [1]], SamplingConfig(strategy="greedy", max_new_tokens=50),
                            pad_id=0, eos_ids=[9])
    assert batch.response_ids.tolist() == [[3, 9], [9, 0]]


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    return tiny_causal_lm(tok), tok


def test_generate_is_seeded_and_groups_n(tiny):
    model, tok = tiny
    cfg = SamplingConfig(strategy="top_p", top_p=0.9, max_new_tokens=8, seed=123)
    a = generate(model, tok, ["the cat", "hello"], cfg, n=3)
    b = generate(model, tok, ["the cat", "hello"], cfg, n=3)
    assert [[g.token_ids for g in row] for row in a] == [[g.token_ids for g in row] for row in b]
    assert len(a) == 2 and all(len(row) == 3 for row in a)
    g = a[0][0]
    assert g.prompt_tokens == len(tok("the cat")["input_ids"])
    assert g.completion_tokens == len(g.token_ids) <= 8
    assert g.finish_reason in ("stop", "length")
    c = generate(model, tok, ["the cat", "hello"], SamplingConfig(max_new_tokens=8, seed=124), n=3)
    assert [[g.token_ids for g in row] for row in a] != [[g.token_ids for g in row] for row in c]


def test_batched_left_padded_greedy_matches_single_prompts_and_hf_generate(tiny):
    model, tok = tiny
    prompts = ["the cat sat on a mat and", "hello", "one two"]
    cfg = SamplingConfig(strategy="greedy", max_new_tokens=10)
    batched = [row[0].token_ids for row in generate(model, tok, prompts, cfg)]
    single = [generate(model, tok, [p], cfg)[0][0].token_ids for p in prompts]
    assert batched == single
    for prompt, ids in zip(prompts, single, strict=True):
        enc = tok(prompt, return_tensors="pt")
        ref = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
        assert ref[0, enc["input_ids"].size(1):].tolist()[: len(ids)] == ids


def test_chat_prompts_use_the_template(tiny):
    model, tok = tiny
    cfg = SamplingConfig(strategy="greedy", max_new_tokens=4)
    messages = [{"role": "user", "content": "hello"}]
    chat = generate(model, tok, [messages], cfg)[0][0]
    templated = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat.prompt_tokens == len(tok(templated, add_special_tokens=False)["input_ids"])
    assert chat.token_ids == generate(model, tok, [templated], cfg)[0][0].token_ids


def test_stream_deltas_join_to_the_generated_text(tiny):
    model, tok = tiny
    cfg = SamplingConfig(strategy="top_k", top_k=20, max_new_tokens=12, seed=5)
    full = generate(model, tok, ["the dog"], cfg)[0][0].text
    deltas = list(generate_stream(model, tok, "the dog", cfg))
    assert "".join(deltas) == full


def test_stop_strings_cut_the_text(tiny):
    model, tok = tiny
    cfg = SamplingConfig(strategy="greedy", max_new_tokens=12)
    text = generate(model, tok, ["the dog"], cfg)[0][0].text
    assert len(text) > 4
    stop = text[2:4]
    cut = generate(model, tok, ["the dog"], SamplingConfig(strategy="greedy", max_new_tokens=12, stop=[stop]))
    g = cut[0][0]
    assert g.text == text[: text.find(stop)] and g.finish_reason == "stop"
    assert "".join(generate_stream(model, tok, "the dog", SamplingConfig(
        strategy="greedy", max_new_tokens=12, stop=[stop]))) == g.text


def test_top_p_of_one_is_no_filter_on_a_full_size_vocabulary():
    # A peaked row over SmolLM2's 49,152 tokens: the fp32 running sum reaches 1.0 long before the
    # tail, which once dropped ~35k tokens a row at top_p = 1.0.
    logits = torch.randn(4, 49152, generator=torch.Generator().manual_seed(0)) * 5
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()
    cfg = SamplingConfig(strategy="top_p", top_p=1.0)
    assert torch.equal(filter_logits(logits, cfg), logits / cfg.temperature)


class _CharTokenizer:
    """Ids are character codes; 0 is EOS. Enough for the text/ids bookkeeping of a Generation."""

    eos_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 0 or not skip_special_tokens)


def _batch(ids: list[int], eos: bool):
    from rlhf.sampling import TokenBatch

    t = torch.tensor([ids])
    return TokenBatch(prompt_ids=t[:, :1], prompt_mask=torch.ones(1, 1, dtype=torch.long), response_ids=t,
                      response_mask=torch.ones_like(t), logprobs=torch.zeros(t.shape, dtype=torch.float),
                      ended_with_eos=torch.tensor([eos]))


def test_a_stop_string_before_eos_ends_the_ids_and_the_usage():
    from rlhf.sampling import _to_generation

    tok = _CharTokenizer()
    ids = [ord(c) for c in "ab.cd"] + [0]  # stop string "." then more text, then EOS
    g = _to_generation(tok, _batch(ids, eos=True), 0, prompt_len=1, stop=["."])
    assert g.text == "ab" and g.finish_reason == "stop"
    assert g.token_ids == [ord("a"), ord("b")] and g.completion_tokens == 2
    plain = _to_generation(tok, _batch(ids, eos=True), 0, prompt_len=1, stop=[])
    assert plain.text == "ab.cd" and plain.token_ids == ids and plain.completion_tokens == 6
    cut = _to_generation(tok, _batch(ids[:-1], eos=False), 0, prompt_len=1, stop=["."])
    assert cut.token_ids == [ord("a"), ord("b")] and cut.finish_reason == "stop"


def test_stream_returns_the_generation_generate_makes(tiny):
    model, tok = tiny
    for cfg in (SamplingConfig(strategy="top_k", top_k=20, max_new_tokens=12, seed=5),
                SamplingConfig(strategy="greedy", max_new_tokens=3)):
        full = generate(model, tok, ["the dog"], cfg)[0][0]
        stream = generate_stream(model, tok, "the dog", cfg)
        deltas = []
        while True:
            try:
                deltas.append(next(stream))
            except StopIteration as end:
                final = end.value
                break
        assert "".join(deltas) == final.text == full.text
        assert (final.token_ids, final.finish_reason, final.completion_tokens, final.prompt_tokens) == (
            full.token_ids, full.finish_reason, full.completion_tokens, full.prompt_tokens)


def test_plain_prompts_can_be_wrapped_as_a_user_turn(tiny):
    model, tok = tiny
    cfg = SamplingConfig(strategy="greedy", max_new_tokens=4)
    wrapped = generate(model, tok, ["hello"], cfg, wrap_plain=True)[0][0]
    chat = generate(model, tok, [[{"role": "user", "content": "hello"}]], cfg)[0][0]
    assert (wrapped.token_ids, wrapped.prompt_tokens) == (chat.token_ids, chat.prompt_tokens)
