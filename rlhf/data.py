"""Data: turn SFT records, preference pairs and PPO prompts into token ids with the shared prompt
format, and collate them (right padding for training and scoring)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.tokenization import Prompt, encode_prompt, encode_response

IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


def split_messages(record: dict[str, Any]) -> tuple[Prompt, str]:
    """(prompt, response) of an SFT record: {"prompt", "response"} or {"messages": [...]} whose last
    message is the assistant's answer."""
    if "messages" in record:
        messages = record["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("an SFT 'messages' record must end with an assistant message")
        return messages[:-1], messages[-1]["content"]
    if "prompt" not in record or "response" not in record:
        raise ValueError(f"an SFT record needs 'prompt' and 'response' (or 'messages'); got keys {sorted(record)}")
    return record["prompt"], record["response"]


def check_pair(record: dict[str, Any]) -> None:
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
    if missing:
        raise ValueError(f"a preference pair needs {', '.join(missing)}; got keys {sorted(record)}")


def join_truncated(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit prompt + response into max_length: drop the start of the prompt first (its end is what the
    response follows), keeping at least half the budget for it, then the end of the response."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    keep_prompt = min(len(prompt), max(max_length - len(response), max_length // 2))
    prompt = prompt[len(prompt) - keep_prompt:]
    return prompt, response[: max_length - len(prompt)]


@dataclass
class Encoded:
    input_ids: list[int]
    prompt_len: int  # tokens before the response starts
    truncated: bool = False  # the end of the response (its EOS at least) did not fit max_length


def encode_pair_side(tokenizer: Any, prompt: Prompt, response: str, max_length: int, wrap_plain: bool) -> Encoded:
    """prompt + response + EOS as one sequence, the layout SFT, RM and DPO all train on and PPO
    scores with: the response is tokenized on its own, as generation produces it."""
    p = encode_prompt(tokenizer, prompt, wrap_plain=wrap_plain)
    r = encode_response(tokenizer, response)
    p, kept = join_truncated(p, r, max_length)
    return Encoded(p + kept, len(p), truncated=len(kept) < len(r))


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rows -> (ids [B, L], mask [B, L]) padded on the right, as training and scoring need."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def response_labels(ids: torch.Tensor, mask: torch.Tensor, prompt_lens: list[int]) -> torch.Tensor:
    """Labels that keep only response tokens (EOS included): ids, mask [B, L] -> [B, L]."""
    labels = ids.masked_fill(mask == 0, IGNORE)
    for i, n in enumerate(prompt_lens):
        labels[i, :n] = IGNORE
    return labels


def collate_sft(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = right_pad([e.input_ids for e in examples], pad_id)
    return {"input_ids": ids, "attention_mask": mask,
            "labels": response_labels(ids, mask, [e.prompt_len for e in examples])}


@dataclass
class EncodedPair:
    chosen: Encoded
    rejected: Encoded
    margin: float

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated


def encode_pair(tokenizer: Any, record: dict[str, Any], max_length: int, wrap_plain: bool) -> EncodedPair:
    check_pair(record)
    return EncodedPair(
        encode_pair_side(tokenizer, record["prompt"], record["chosen"], max_length, wrap_plain),
        encode_pair_side(tokenizer, record["prompt"], record["rejected"], max_length, wrap_plain),
        float(record.get("margin") or 0.0),
    )


def collate_pairs(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows, in one padded batch [2B, L], so one forward pass
    scores both sides."""
    sides = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    ids, mask = right_pad([e.input_ids for e in sides], pad_id)
    return {"input_ids": ids, "attention_mask": mask,
            "labels": response_labels(ids, mask, [e.prompt_len for e in sides]),
            "prompt_lens": torch.tensor([e.prompt_len for e in sides], dtype=torch.long),
            "margin": torch.tensor([p.margin for p in pairs], dtype=torch.float)}


def encode_pairs(tokenizer: Any, records: list[dict[str, Any]], max_length: int, wrap_plain: bool
                 ) -> tuple[list[EncodedPair], int]:
    """(encoded pairs, how many were dropped): a pair whose truncation cut either response before
    its EOS is dropped, since scoring it would compare two answers mid-sentence."""
    encoded = [encode_pair(tokenizer, r, max_length, wrap_plain) for r in records]
    kept = [e for e in encoded if not e.truncated]
    return kept, len(encoded) - len(kept)


def prompt_key(record: dict[str, Any]) -> str:
    """What identifies a record's prompt: its prompt_id when the service gave one, else its text."""
    if record.get("prompt_id") is not None:
        return f"id:{record['prompt_id']}"
    return "text:" + json.dumps(record.get("prompt"), sort_keys=True)


def split_eval(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded held-out split by prompt: every record of a held-out prompt is held out, so the
    K(K-1)/2 pairs of one ranking and the same pair from several annotators never land on both
    sides. At least one prompt each side when there are two or more prompts."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(prompt_key(r) if isinstance(r, dict) else str(i), []).append(i)
    keys = sorted(groups)
    if len(keys) < 2:
        return list(records), []
    random.Random(seed).shuffle(keys)
    n_eval = min(len(keys) - 1, max(1, round(len(keys) * fraction)))
    held = {i for k in keys[:n_eval] for i in groups[k]}
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def _response_key(record: dict[str, Any], side: str) -> str:
    rid = record.get(f"{side}_id")
    return f"id:{rid}" if rid is not None else "text:" + json.dumps(record[side], sort_keys=True)


def consensus_pairs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pair per prompt and pair of responses, in the direction most annotators chose, with
    "votes" (how many agreed) and "agreement" (their share); pairs without a majority are left out.
    With one annotator per task every pair is its own consensus."""
    tally: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        a, b = _response_key(r, "chosen"), _response_key(r, "rejected")
        key = (prompt_key(r), *sorted((a, b)))
        tally.setdefault(key, []).append(r)
    out = []
    for (_prompt, first, _second), votes in tally.items():
        for_first = [v for v in votes if _response_key(v, "chosen") == first]
        against = [v for v in votes if _response_key(v, "chosen") != first]
        if len(for_first) == len(against):
            continue
        majority = for_first if len(for_first) > len(against) else against
        out.append({**majority[0], "votes": len(majority), "agreement": len(majority) / len(votes)})
    return out


def batches(n: int, batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Index batches over n items, reshuffled by rng when given; the last one may be short."""
    order = list(range(n))
    if rng is not None:
        rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
