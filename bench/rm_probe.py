"""How much of each preference rule the base model's frozen features already hold: features of every
cached candidate (one forward pass each: the last token's hidden state and the mean over the
response tokens, at a few depths), then a Bradley-Terry linear head fitted on the training tasks'
noisy pairs (the same simulated annotators as bench/rm_sweep.py) and its accuracy against the rule
on every ordered pair of the held-out tasks. Minutes, not the hour a sweep of fine-tuned reward
models takes, so it shows quickly which pooling and which rules a reward model can start from.

    .venv/bin/python bench/rm_probe.py --candidates /tmp/cand.json --train 48 --heldout 64
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench.preference_rules import RULES, preference  # noqa: E402
from bench.rm_sweep import pairs_for  # noqa: E402

WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)


def features(model, tokenizer, rows: list[dict], depths: list[int]) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    import torch

    from rlhf.data import encode_pair_side

    out = {}
    with torch.no_grad():
        for t, row in enumerate(rows):
            for j, response in enumerate(row["responses"]):
                enc = encode_pair_side(tokenizer, row["prompt"], response["text"], 1024, True)
                hidden = model.model(input_ids=torch.tensor([enc.input_ids]), output_hidden_states=True).hidden_states
                f = {}
                for d in depths:
                    f[f"last@{d}"] = hidden[d][0, -1]
                    f[f"mean@{d}"] = hidden[d][0, enc.prompt_len:].mean(0)
                out[(t, j)] = f
    return out


def fit_head(diffs: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """w minimising mean -log sigmoid(w . (chosen - rejected)) + wd |w|^2 (no bias: it cancels)."""
    import torch

    w = torch.zeros(diffs.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-(diffs @ w)).mean() + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", required=True, help="a bench/learning.py cache")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--train", type=int, default=48, help="tasks whose pairs fit the head")
    ap.add_argument("--heldout", type=int, default=64, help="the last tasks, for the accuracy")
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--careless", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = json.loads(Path(args.candidates).read_text())
    rows = cache["candidates"]
    if args.train + args.heldout > len(rows):
        raise SystemExit(f"the cache has {len(rows)} tasks; --train + --heldout is {args.train + args.heldout}")
    train_rows, held_rows = rows[:args.train], rows[-args.heldout:]
    base = cache["key"]["model"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    layers = model.config.num_hidden_layers
    depths = sorted({layers // 3, 2 * layers // 3, layers})
    t0 = time.monotonic()
    feats = features(model, tokenizer, train_rows + held_rows, depths)
    print(f"features of {len(feats)} answers at depths {depths} of {layers}: {time.monotonic() - t0:.0f} s")
    kinds = [f"{p}@{d}" for p in ("last", "mean") for d in depths]
    print(f"{'rule':<16}{'pairs':>6}{'held':>6}  " + "  ".join(f"{k:>14}" for k in kinds)
          + f"   (accuracy vs the rule at weight decay {'/'.join(map(str, WEIGHT_DECAYS))})")
    offset = len(train_rows)
    index = {(t, r["text"]): j for t, row in enumerate(train_rows) for j, r in enumerate(row["responses"])}
    scale = {}  # per feature kind: mean and std over every answer, for standardised features
    for kind in kinds:
        stacked = torch.stack([f[kind] for f in feats.values()])
        scale[kind] = (stacked.mean(0), stacked.std(0) + 1e-6)
    for name in args.rules.split(","):
        rule = RULES[name]
        pairs = pairs_for(rule, train_rows, args)
        held = [(offset + h, a, b, want) for h, row in enumerate(held_rows)
                for a, b in itertools.combinations(range(len(row["responses"])), 2)
                if (want := preference(rule, row["responses"][a]["text"], row["responses"][b]["text"])) != 0.5]
        cells = []
        for kind in kinds:
            mu, sd = scale[kind]

            def f(t, j, kind=kind, mu=mu, sd=sd):
                return (feats[(t, j)][kind] - mu) / sd

            diffs = torch.stack([f(p["prompt_id"], index[(p["prompt_id"], p["chosen"])])
                                 - f(p["prompt_id"], index[(p["prompt_id"], p["rejected"])]) for p in pairs])
            accs = []
            for wd in WEIGHT_DECAYS:
                w = fit_head(diffs, wd)
                agree = sum(1.0 - abs(want - (1.0 if s > 0 else 0.0 if s < 0 else 0.5))
                            for t, a, b, want in held for s in [float((f(t, a) - f(t, b)) @ w)])
                accs.append(agree / len(held) if held else float("nan"))
            cells.append("/".join(f"{a:.2f}" for a in accs))
        print(f"{name:<16}{len(pairs):>6}{len(held):>6}  " + "  ".join(f"{c:>14}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
