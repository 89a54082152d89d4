"""Sampling: the one decoding implementation behind the serving API, round generation and PPO
rollouts (greedy, multinomial, top-k, top-p, temperature; batched, KV cache, left padding).

We write the decoding loop ourselves rather than call `model.generate` because PPO needs the
per-token log-probs of exactly the distribution it sampled from, the playground needs text deltas,
and one small loop is easier to test against hand-computed distributions than generate's
processor stack.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from rlhf.callbacks import ShouldStop, check_stop
from rlhf.tokenization import Prompt, encode_prompt, ensure_pad_token, eos_token_ids

STRATEGIES = ("greedy", "multinomial", "top_k", "top_p")


@dataclass
class SamplingConfig:
    strategy: str = "top_p"  # greedy | multinomial | top_k | top_p
    temperature: float = 1.0  # logits are divided by this before any filtering; ignored by greedy
    top_k: int = 50  # tokens kept by top_k
    top_p: float = 0.95  # probability mass kept by top_p (smallest set that reaches it)
    max_new_tokens: int = 128  # hard cap on completion length
    seed: int | None = None  # same seed + same prompts -> same samples
    stop: list[str] = field(default_factory=list)  # generation ends when the text contains one

    def validate(self) -> SamplingConfig:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.strategy == "top_k" and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if self.strategy == "top_p" and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError("stop must be a list of non-empty strings")
        return self


@dataclass
class Generation:
    text: str  # completion text, without the EOS token and cut before any stop string
    token_ids: list[int]  # completion ids (EOS included when the model emitted it)
    finish_reason: str  # "stop" (EOS or stop string) | "length"
    prompt_tokens: int
    completion_tokens: int


# ---- the math: logits [B, V] -> filtered logits [B, V] -------------------------------------


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row; the rest become -inf. logits: [B, V]."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p. logits: [B, V].

    p >= 1 keeps every token: on a 49k vocabulary an fp32 cumulative sum reaches 1.0 well before
    the tail, so the comparison alone would drop tens of thousands of tokens. The sum runs in
    float64 for the same reason at p just below 1.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
    probs = sorted_logits.double().softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # [B, V] mass of strictly more likely tokens
    # A token is needed while the mass before it is still short of p; the top token always stays.
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """The logits the sample is drawn from: temperature first, then top-k or top-p."""
    logits = apply_temperature(logits.float(), config.temperature)
    if config.strategy == "top_k":
        return top_k_filter(logits, config.top_k)
    if config.strategy == "top_p":
        return top_p_filter(logits, config.top_p)
    return logits


def sample_next(
    logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row. logits: [B, V] -> (tokens [B], logprobs [B]).

    The log-prob is under the temperature-scaled, unfiltered distribution: the one PPO recomputes
    for the policy and the reference, so the two agree.
    """
    logprobs_all = apply_temperature(logits.float(), config.temperature).log_softmax(-1)  # [B, V]
    if config.strategy == "greedy":
        tokens = logits.argmax(-1)
    else:
        probs = filter_logits(logits, config).softmax(-1)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs_all.gather(-1, tokens[:, None]).squeeze(-1)


# ---- the decoding loop ----------------------------------------------------------------------


@dataclass
class TokenBatch:
    """What a batched decode produced, in the layout PPO scores: [left-padded prompt | response]."""

    prompt_ids: torch.Tensor  # [B, P] left-padded with PAD
    prompt_mask: torch.Tensor  # [B, P] 1 on real prompt tokens
    response_ids: torch.Tensor  # [B, T] right-padded with PAD after the first EOS
    response_mask: torch.Tensor  # [B, T] 1 on generated tokens up to and including EOS
    logprobs: torch.Tensor  # [B, T] sampling log-probs (0 on padding)
    ended_with_eos: torch.Tensor  # [B] bool


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """rows of ids -> (ids [B, P], mask [B, P]) padded on the left, as generation needs."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding. mask: [B, L] -> [B, L]."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _decode_steps(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, config: SamplingConfig,
                  eos_ids: list[int], generator: torch.Generator | None, should_stop: ShouldStop | None = None
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (tokens [B], logprobs [B]) for each new position, reusing the KV cache. `should_stop` is
    asked before every position (StopRequested), so a long decode is cancelled within one token."""
    mask = prompt_mask
    positions = positions_from_mask(mask)
    out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=positions, use_cache=True)
    eos = torch.tensor(eos_ids, device=prompt_ids.device)
    done = torch.zeros(prompt_ids.size(0), dtype=torch.bool, device=prompt_ids.device)
    next_pos = positions[:, -1:] + 1  # [B, 1]
    for _ in range(config.max_new_tokens):
        check_stop(should_stop)
        tokens, logprobs = sample_next(out.logits[:, -1, :], config, generator)
        yield tokens, logprobs
        done = done | torch.isin(tokens, eos)
        if bool(done.all()):
            return
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos,
                    cache=out.cache, use_cache=True)
        next_pos = next_pos + 1


@torch.no_grad()
def generate_tokens(model: Any, prompts: list[list[int]], config: SamplingConfig, *, pad_id: int,
                    eos_ids: list[int], generator: torch.Generator | None = None,
                    should_stop: ShouldStop | None = None) -> TokenBatch:
    """Decode a batch of tokenized prompts; everything after a row's first EOS is PAD."""
    device = model_device(model)
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)
    eos = torch.tensor(eos_ids, device=device)
    steps = list(_decode_steps(model, prompt_ids, prompt_mask, config, eos_ids, generator, should_stop))
    tokens = torch.stack([t for t, _ in steps], dim=1)  # [B, T]
    logprobs = torch.stack([lp for _, lp in steps], dim=1)  # [B, T]
    is_eos = torch.isin(tokens, eos)
    # Tokens strictly after the first EOS are not part of the response.
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    response_mask = (~after_eos).long()
    return TokenBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=tokens.masked_fill(after_eos, pad_id),
        response_mask=response_mask,
        logprobs=logprobs.masked_fill(after_eos, 0.0),
        ended_with_eos=is_eos.any(-1),
    )


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stop if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def generate(model: Any, tokenizer: Any, prompts: list[str] | list[list[dict]], config: SamplingConfig,
             n: int = 1, *, batch_size: int = 16, wrap_plain: bool = False,
             should_stop: ShouldStop | None = None) -> list[list[Generation]]:
    """n completions for each prompt -> one list of Generation per prompt, in order.

    Strings are raw text (a user turn of the chat template with `wrap_plain`, as the training
    stages format them); message lists go through the chat template with the generation prompt.
    `should_stop` is asked at every decoded position (StopRequested ends the call).
    """
    config.validate()
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ensure_pad_token(tokenizer)
    eos_ids = eos_token_ids(tokenizer, model)
    encoded = [encode_prompt(tokenizer, p, wrap_plain=wrap_plain) for p in prompts for _ in range(n)]
    generator = make_generator(config.seed, model_device(model))
    was_training = model.training
    model.eval()
    flat: list[Generation] = []
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            batch = generate_tokens(model, chunk, config, pad_id=tokenizer.pad_token_id,
                                    eos_ids=eos_ids, generator=generator, should_stop=should_stop)
            for row, ids in enumerate(chunk):
                flat.append(_to_generation(tokenizer, batch, row, len(ids), config.stop))
    finally:
        model.train(was_training)
    return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]


def _to_generation(tokenizer: Any, batch: TokenBatch, row: int, prompt_len: int, stop: list[str]) -> Generation:
    length = int(batch.response_mask[row].sum())
    ids = batch.response_ids[row, :length].tolist()
    if bool(batch.ended_with_eos[row]):
        return _finish(tokenizer, ids[:-1], ids[-1], prompt_len, stop)
    return _finish(tokenizer, ids, None, prompt_len, stop)


def _finish(tokenizer: Any, ids: list[int], eos_id: int | None, prompt_len: int, stop: list[str]) -> Generation:
    """The Generation of completion ids (EOS excluded; eos_id is the EOS the model emitted, if any).

    A stop string wins over a later EOS: the ids and the usage count end with the text, so tokens
    after the stop are neither returned nor billed.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    text, stopped = _cut_at_stop(text, stop)
    if stopped:
        ids = _ids_covering(tokenizer, ids, len(text))
    elif eos_id is not None:
        ids = ids + [int(eos_id)]
    return Generation(text=text, token_ids=ids, finish_reason="stop" if eos_id is not None or stopped else "length",
                      prompt_tokens=prompt_len, completion_tokens=len(ids))


def _ids_covering(tokenizer: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ids whose text covers the first n_chars characters."""
    for k in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:k], skip_special_tokens=True)) >= n_chars:
            return ids[:k]
    return ids


@torch.no_grad()
def generate_stream(model: Any, tokenizer: Any, prompt: Prompt, config: SamplingConfig, *,
                    on_token: Callable[[int], None] | None = None) -> Generator[str, None, Generation]:
    """Yield the completion of one prompt as text deltas, for server-sent events; the generator's
    return value (StopIteration.value) is the finished Generation, with its token ids, usage and
    finish reason counted exactly as `generate` counts them. `on_token` sees every sampled id
    (EOS included) as it is drawn, before the delta it belongs to is yielded.

    A delta is held back while it ends in an unfinished UTF-8 character or could be the start of a
    stop string, so the joined deltas equal `generate(...)[0][0].text`.
    """
    config.validate()
    ensure_pad_token(tokenizer)
    eos_ids = eos_token_ids(tokenizer, model)
    device = model_device(model)
    ids, mask = left_pad([encode_prompt(tokenizer, prompt)], tokenizer.pad_token_id, device)
    generator = make_generator(config.seed, device)
    hold = max((len(s) for s in config.stop), default=1) - 1
    was_training = model.training
    model.eval()
    completion: list[int] = []
    eos_id: int | None = None
    sent = 0
    try:
        for tokens, _ in _decode_steps(model, ids, mask, config, eos_ids, generator):
            token = int(tokens[0])
            if on_token is not None:
                on_token(token)
            if token in eos_ids:
                eos_id = token
                break
            completion.append(token)
            text = tokenizer.decode(completion, skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, config.stop)
            if stopped:
                break
            safe = len(text) - hold if config.stop else len(text)
            if text.endswith("\ufffd"):
                continue
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        final = _finish(tokenizer, completion, eos_id, ids.size(1), config.stop)
        if len(final.text) > sent:
            yield final.text[sent:]
        return final
    finally:
        model.train(was_training)
