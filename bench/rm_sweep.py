"""Reward-model settings against several preference rules, without the service around it: the
candidates and held-out samples of a bench/learning.py cache, the same simulated annotators, the
pairs a ranking gives (as annotate derives them), rlhf.reward.train_reward_model, and the accuracy
against the rule on held-out prompts. For choosing RewardConfig defaults quickly (bench/learning.py
measures the whole round through the service).

    .venv/bin/python bench/rm_sweep.py --candidates /tmp/cand.json --rules list,numbers \
        --configs '{}' '{"learning_rate": 3e-5, "epochs": 2}'
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from bench.preference_rules import RULES, annotators  # noqa: E402


def pairs_for(rule, candidates: list[dict], args) -> list[dict]:
    """Each task to one annotator in turn (k = 1), its ranking's pairs: every response of a better
    group over every response of a worse one, margin = groups apart - 1."""
    team = annotators(rule, careful=args.annotators, noise=args.noise, careless=args.careless, seed=args.seed)
    pairs = []
    for t, row in enumerate(candidates):
        responses = [{"id": i, "text": r["text"]} for i, r in enumerate(row["responses"])]
        ranking = team[t % len(team)].rank(responses)
        for (gi, better), (gj, worse) in itertools.combinations(enumerate(ranking), 2):
            for w in better:
                for lo in worse:
                    pairs.append({"prompt": row["prompt"], "chosen": responses[w]["text"],
                                  "rejected": responses[lo]["text"], "margin": float(gj - gi - 1), "prompt_id": t})
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", required=True)
    ap.add_argument("--rules", default="list,question,numbers,positive")
    ap.add_argument("--configs", nargs="+", default=["{}"], help="RewardConfig overrides, one JSON each")
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--careless", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=int, default=12, help="tasks held out for the accuracy")
    ap.add_argument("--train", type=int, default=None,
                    help="train on the first N tasks only (default: all not held out), so a large cache gives "
                         "a round-sized training set and many held-out pairs")
    args = ap.parse_args()

    from bench.learning import rm_against_rule
    from rlhf.models import load_reward_model
    from rlhf.reward import RewardConfig, train_reward_model

    cache = json.loads(Path(args.candidates).read_text())
    base = cache["key"]["model"]
    # Held out: the last --heldout tasks' candidates (4 responses: 6 pairs a prompt), so the
    # accuracy against the rule rests on enough pairs; the RM trains on the others' noisy pairs.
    train_rows, held_rows = cache["candidates"][:-args.heldout], cache["candidates"][-args.heldout:]
    train_rows = train_rows[:args.train]
    flat = [row["prompt"] for row in held_rows for _ in row["responses"]]
    texts = [r["text"] for row in held_rows for r in row["responses"]]
    print(f"{'rule':<16}{'config':<44}{'pairs':>6}{'train acc':>10}{'acc vs labels':>14}{'vs rule':>9}{'n':>5}"
          f"{'s':>6}")
    for name in args.rules.split(","):
        rule = RULES[name]
        pairs = pairs_for(rule, train_rows, args)
        held_pairs = pairs_for(rule, held_rows, args)
        for raw in args.configs:
            config = RewardConfig(**json.loads(raw))
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.monotonic()
                result = train_reward_model(config, pairs, base, Path(tmp) / "rm", eval_pairs=held_pairs)
                took = time.monotonic() - t0
                vs = rm_against_rule(load_reward_model(result.out_dir), rule, flat, texts)
            acc = result.metrics.get("eval_accuracy")
            train_acc = result.metrics.get("train_accuracy_final", float("nan"))
            print(f"{name:<16}{raw:<44}{len(pairs):>6}{train_acc:>10.3f}{'n/a' if acc is None else f'{acc:.3f}':>14}"
                  f"{vs['rm_rule_accuracy'] or float('nan'):>9.3f}{vs['rm_rule_pairs']:>5}{took:>6.0f}", flush=True)

if __name__ == "__main__":
    main()
