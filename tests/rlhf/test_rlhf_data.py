"""Data: the held-out split by prompt, consensus pairs, and dropping pairs truncated before EOS."""

from __future__ import annotations

import random

from rlhf_testkit import tiny_tokenizer

from rlhf.data import consensus_pairs, encode_pair_side, encode_pairs, prompt_key, split_eval


def ranking_pairs(n_prompts: int, k_annotators: int, seed: int = 0, with_ids: bool = True) -> list[dict]:
    """What the service exports: 4 responses per prompt, full rankings (6 pairs each) by k annotators."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_prompts):
        responses = [(p * 10 + i, f"answer {i} to {p}") for i in range(4)]
        for a in range(k_annotators):
            order = responses[:]
            rng.shuffle(order)
            for i in range(4):
                for j in range(i + 1, 4):
                    row = {"prompt": f"question {p}", "chosen": order[i][1], "rejected": order[j][1],
                           "annotator": f"a{a}", "margin": j - i - 1}
                    if with_ids:
                        row.update(prompt_id=p, chosen_id=order[i][0], rejected_id=order[j][0])
                    rows.append(row)
    return rows


def test_no_prompt_lands_on_both_sides_of_the_split():
    for with_ids in (True, False):
        rows = ranking_pairs(30, 3, with_ids=with_ids)
        train, held = split_eval(rows, 0.1, seed=0)
        assert len(train) + len(held) == len(rows)
        assert {prompt_key(r) for r in train}.isdisjoint({prompt_key(r) for r in held})
        assert len({prompt_key(r) for r in held}) == 3  # 10% of the prompts, all their pairs
        assert len(held) == 3 * 6 * 3


def test_consensus_keeps_the_majority_direction_of_each_pair():
    a = {"prompt": "q", "prompt_id": 1, "chosen": "x", "rejected": "y", "chosen_id": 1, "rejected_id": 2}
    b = {**a, "chosen": "y", "rejected": "x", "chosen_id": 2, "rejected_id": 1}
    other = {**a, "chosen": "z", "chosen_id": 3}
    out = consensus_pairs([a, a, b, other, b, a])
    by_pair = {(r["chosen_id"], r["rejected_id"]): r for r in out}
    assert set(by_pair) == {(1, 2), (3, 2)}
    assert by_pair[(1, 2)]["votes"] == 3 and by_pair[(1, 2)]["agreement"] == 3 / 5
    assert consensus_pairs([a, b]) == []  # a tie has no consensus
    assert len(consensus_pairs(ranking_pairs(2, 1))) == 12  # one annotator: every pair is its own


def test_pairs_whose_truncation_cuts_the_eos_are_dropped():
    tok = tiny_tokenizer()
    short = {"prompt": "the cat", "chosen": "yes", "rejected": "no"}
    long = {"prompt": "the cat", "chosen": "yes", "rejected": " ".join(["the dog ran"] * 40)}
    assert encode_pair_side(tok, "the cat", long["rejected"], 32, True).truncated
    assert not encode_pair_side(tok, "the cat", "yes", 32, True).truncated
    kept, dropped = encode_pairs(tok, [short, long, short], 32, True)
    assert len(kept) == 2 and dropped == 1
    assert all(p.chosen.input_ids[-1] == tok.eos_token_id == p.rejected.input_ids[-1] for p in kept)
