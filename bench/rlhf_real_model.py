"""Real-model check on CPU: a reward model on a synthetic preference (held-out accuracy), then PPO
against it, printing the curves of score, KL and response length per iteration.

    .venv/bin/python bench/rlhf_real_model.py                          # 300 pairs, 20 PPO iterations
    .venv/bin/python bench/rlhf_real_model.py --pairs 120 --iterations 5 --out /tmp/rlhf_real

The preference: the chosen answer is friendly and on topic, the rejected one is curt and dismissive.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODELS = (REPO / "data/artifacts/base/SmolLM2-135M-Instruct", Path("/tmp/smol/out"))
TOPICS = ["apples", "the moon", "rivers", "bicycles", "coffee", "snow", "libraries", "owls", "gardens", "bread",
          "mountains", "trains", "violins", "honey", "lighthouses", "clouds", "maps", "tea", "forests", "kites"]
ASKS = ["Tell me something about {t}.", "What do you think of {t}?", "Say one fact about {t}.",
        "Describe {t} in a sentence.", "Why do people like {t}?"]
GOOD = ["Happy to help! {T} are a lovely subject: many people find them fascinating.",
        "Great question! {T} have a long history and are worth learning about.",
        "Sure! {T} can be surprising, and I'd be glad to tell you more."]
BAD = ["Whatever. Ask someone else.", "No idea, not interested.", "Don't care about that.",
       "Boring question."]


def make_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        t = rng.choice(TOPICS)
        pairs.append({"prompt": rng.choice(ASKS).format(t=t),
                      "chosen": rng.choice(GOOD).format(T=t.capitalize()),
                      "rejected": rng.choice(BAD)})
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=next((str(p) for p in DEFAULT_MODELS if (p / "config.json").is_file()), None))
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--out", default="/tmp/rlhf_real_model")
    args = ap.parse_args()
    if not args.model:
        raise SystemExit("no model: pass --model DIR")
    from rlhf.ppo import PPOConfig, train_ppo
    from rlhf.reward import RewardConfig, train_reward_model

    out = Path(args.out)
    t0 = time.perf_counter()
    rm_cfg = RewardConfig(learning_rate=1e-5, epochs=1, batch_size=8, precision=args.precision, eval_fraction=0.2)
    rm = train_reward_model(rm_cfg, make_pairs(args.pairs, 0), args.model, out / "rm",
                            on_step=lambda m: print(f"rm step {m['step']}/{m['total_steps']} loss {m['loss']:.3f} "
                                                    f"acc {m['accuracy']:.2f} {m['step_time_s']:.1f}s", flush=True))
    m = rm.metrics
    print(f"reward model: held-out accuracy {m['eval_accuracy']:.3f} on {m['eval_pairs']} pairs, margin "
          f"{m['eval_margin']:.2f}, rewards [{m['eval_reward_min']:.2f}, {m['eval_reward_max']:.2f}], "
          f"{time.perf_counter() - t0:.0f}s", flush=True)

    prompts = [{"prompt": p["prompt"]} for p in make_pairs(200, 1)]
    cfg = PPOConfig(iterations=args.iterations, rollout_batch_size=args.rollouts, mini_batch_size=args.rollouts // 2,
                    learning_rate=1e-5, kl_coef=0.05, precision=args.precision, save_every=5,
                    sampling={"strategy": "multinomial", "temperature": 0.7, "max_new_tokens": args.new_tokens})
    print("iter  score    kl   len   eos  entropy approx_kl clip  time_s  alarms", flush=True)

    def show(h: dict) -> None:
        print(f"{h['iteration']:4d} {h['score']:6.2f} {h['kl']:5.2f} {h['response_length']:5.1f} {h['eos_rate']:5.2f}"
              f" {h['entropy']:7.2f} {h['approx_kl']:9.4f} {h['clip_frac']:.3f} {h['iteration_time_s']:6.1f}"
              f"  {','.join(h['alarms'])}", flush=True)

    ppo = train_ppo(cfg, prompts, args.model, rm.out_dir, out / "ppo", on_step=show)
    curves = {k: [round(h[k], 3) for h in ppo.history] for k in ("score", "kl", "response_length")}
    print(json.dumps({"reward_model": {k: m[k] for k in ("eval_accuracy", "eval_margin")}, "ppo_curves": curves,
                      "sample": ppo.history[-1]["samples"][:1], "total_s": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
