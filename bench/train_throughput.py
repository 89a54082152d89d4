"""Training throughput on a real model: tokens/s of our SFT, reward-model, DPO and PPO loops, the
same SFT/reward/DPO work through TRL's trainers for comparison, our RL stage with RLOO advantages
against TRL's RLOO trainer on the same rollouts (TRL removed its PPO trainer), and bf16 autocast vs
fp32.

    .venv/bin/python bench/train_throughput.py                     # small defaults, a few minutes
    .venv/bin/python bench/train_throughput.py --steps 8 --batch 8 --ppo-iterations 3 --skip-trl
    .venv/bin/python bench/train_throughput.py --processes 1 2 --steps 6   # the distributed path's cost

Tokens/s counts the real (non-pad) tokens of the training batches over the time of the optimizer
steps only (model loading, reference precomputation and saving are excluded, for both sides).

The RL comparison ("rloo" stage) is the same work on both sides: --rollouts responses per
iteration (--group per prompt), at most --new-tokens each, sampled at temperature 0.7 (TRL's
generation cut to plain sampling: top-k off), scored by the same reward model through our
`score_texts`, LoRA r16 on all linear layers with the adapter-off base as the reference, then
--ppo-epochs passes of minibatches of half the rollouts. The first iteration is warm-up and dropped
on both sides; the figure is the median seconds per iteration.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODELS = (REPO / "data/artifacts/base/SmolLM2-135M-Instruct", Path("/tmp/smol/out"))
TOPICS = ["the weather", "a cat", "tea", "trains", "the sea", "music", "bread", "rain", "winter", "books"]


def default_model() -> str | None:
    return next((str(p) for p in DEFAULT_MODELS if (p / "config.json").is_file()), None)


def synthetic(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Demonstrations and preference pairs of realistic short-answer length (~60-90 tokens)."""
    rng = random.Random(seed)
    demos, pairs = [], []
    for i in range(n):
        topic = rng.choice(TOPICS)
        prompt = f"Write two sentences about {topic}. Request number {i}."
        good = (f"Here are two sentences about {topic}. It is something many people enjoy on a quiet day, "
                f"and it often brings back good memories of home.")
        bad = f"No. {topic} {topic} {topic}."
        demos.append({"prompt": prompt, "response": good})
        pairs.append({"prompt": prompt, "chosen": good, "rejected": bad})
    return demos, pairs


def ours(stage: str, model: str, demos: list[dict], pairs: list[dict], args, out: Path, precision: str) -> dict:
    from rlhf.dpo import DPOConfig, train_dpo
    from rlhf.reward import RewardConfig, train_reward_model
    from rlhf.sft import SFTConfig, train_sft

    common = dict(batch_size=args.batch, epochs=1, max_steps=args.steps, eval_fraction=0, precision=precision,
                  learning_rate=1e-5)
    if stage == "sft":
        res = train_sft(SFTConfig(**common), demos[: args.batch * args.steps], model, out / f"sft-{precision}")
    elif stage == "reward":
        res = train_reward_model(RewardConfig(**common), pairs[: args.batch * args.steps], model, out / "rm")
    else:
        res = train_dpo(DPOConfig(**common), pairs[: args.batch * args.steps], model, out / "dpo")
    steps = res.history
    seconds = sum(h["step_time_s"] for h in steps)
    tokens = sum(h["tokens"] for h in steps)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "step_s": [round(h["step_time_s"], 2) for h in steps]}


def step_timer():
    """A TRL (transformers) callback that records the seconds of every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer()


def trl_run(stage: str, model_dir: str, demos: list[dict], pairs: list[dict], args, out: Path, tokens: int) -> dict:
    """The same examples, batch size and steps through TRL's trainer; the timed span is the steps."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhf.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    timer = step_timer()
    n = args.batch * args.steps
    common = dict(output_dir=str(out / f"trl-{stage}"), per_device_train_batch_size=args.batch, max_steps=args.steps,
                  learning_rate=1e-5, bf16=args.precision == "bf16", use_cpu=True, report_to="none",
                  logging_steps=1000, save_strategy="no", max_length=512, dataloader_num_workers=0)

    def msgs(text: str, role: str) -> list[dict]:
        return [{"role": role, "content": text}]

    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list([{"prompt": msgs(d["prompt"], "user"), "completion": msgs(d["response"], "assistant")}
                                  for d in demos[:n]])
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=data, processing_class=tok,
                             callbacks=[timer])
    else:
        data = Dataset.from_list([{"prompt": msgs(p["prompt"], "user"), "chosen": msgs(p["chosen"], "assistant"),
                                   "rejected": msgs(p["rejected"], "assistant")} for p in pairs[:n]])
        if stage == "reward":
            from trl import RewardConfig, RewardTrainer

            model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
            model.config.pad_token_id = tok.pad_token_id
            trainer = RewardTrainer(model=model, args=RewardConfig(**common), train_dataset=data,
                                    processing_class=tok, callbacks=[timer])
        else:
            from trl import DPOConfig, DPOTrainer

            model = AutoModelForCausalLM.from_pretrained(model_dir)
            trainer = DPOTrainer(model=model, args=DPOConfig(**common, precompute_ref_log_probs=True),
                                 train_dataset=data, processing_class=tok, callbacks=[timer])
    trainer.train()
    seconds = sum(timer.times)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "step_s": [round(t, 2) for t in timer.times]}


def ppo(model: str, args, out: Path) -> dict:
    from rlhf.ppo import PPOConfig, train_ppo

    prompts = [{"prompt": f"Write one sentence about {t}."} for t in TOPICS]
    cfg = PPOConfig(iterations=args.ppo_iterations, rollout_batch_size=args.rollouts, mini_batch_size=args.rollouts // 2,
                    ppo_epochs=args.ppo_epochs, precision=args.precision, save_every=0,
                    sampling={"strategy": "multinomial", "temperature": 0.7, "max_new_tokens": args.new_tokens})
    # The base model doubles as the reward model (a fresh scalar head): the cost is what we measure.
    res = train_ppo(cfg, prompts, model, model, out / "ppo")
    keys = ("iteration_time_s", "time_generate_s", "time_score_s", "time_forward_s", "time_update_s",
            "response_tokens", "tokens_per_s", "response_length")
    return {"iterations": [{k: round(h[k], 2) for k in keys} for h in res.history]}


def rloo_config(args, **extra):
    from rlhf.ppo import PPOConfig

    return PPOConfig(iterations=args.ppo_iterations, rollout_batch_size=args.rollouts, mini_batch_size=args.rollouts // 2,
                     ppo_epochs=args.ppo_epochs, precision=args.precision, save_every=0, advantage="rloo",
                     samples_per_prompt=args.group, learning_rate=1e-5,
                     sampling={"strategy": "multinomial", "temperature": 0.7, "max_new_tokens": args.new_tokens},
                     **extra)


def ours_rloo(model: str, args, out: Path) -> dict:
    from rlhf.ppo import train_ppo

    prompts = [{"prompt": f"Write one sentence about {t}."} for t in TOPICS]
    res = train_ppo(rloo_config(args), prompts, model, model, out / "rloo")
    times = [h["iteration_time_s"] for h in res.history][1:]
    tokens = sum(h["response_tokens"] for h in res.history[1:])
    return {"iteration_s": [round(t, 2) for t in times], "median_s": statistics.median(times),
            "response_tokens_per_s": tokens / sum(times)}


def trl_rloo(model_dir: str, args, out: Path) -> dict:
    """TRL's RLOOTrainer on the work of ours_rloo: per generation, rollouts responses (group per
    prompt), then ppo_epochs x 2 optimizer steps of rollouts / 2 (num_iterations x
    steps_per_generation); the reward is our reward model through score_texts."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import RLOOConfig, RLOOTrainer

    from rlhf.models import load_reward_model, load_tokenizer, score_texts

    tok = load_tokenizer(model_dir)
    rm = load_reward_model(model_dir, device="cpu", dtype=torch.bfloat16 if args.precision == "bf16" else None)
    tokens: list[int] = []

    def reward(prompts, completions, completion_ids, **_) -> list[float]:
        tokens.append(sum(len(c) for c in completion_ids))
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        plain = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            return score_texts(rm, plain, texts, max_length=512, batch_size=len(texts)).tolist()

    steps_per_gen = 2
    per_iter = args.ppo_epochs * steps_per_gen
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Write one sentence about {t}."}]}
                              for t in TOPICS] * 8)
    cfg = RLOOConfig(output_dir=str(out / "trl-rloo"), per_device_train_batch_size=args.rollouts // steps_per_gen,
                     steps_per_generation=steps_per_gen, num_iterations=args.ppo_epochs,
                     num_generations=args.group, max_completion_length=args.new_tokens, temperature=0.7,
                     top_k=0, top_p=1.0, beta=0.05, learning_rate=1e-5, max_steps=args.ppo_iterations * per_iter,
                     bf16=args.precision == "bf16", use_cpu=True, report_to="none", logging_steps=1000,
                     save_strategy="no", dataloader_num_workers=0, disable_dropout=True)
    trainer = RLOOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=reward, args=cfg,
                          train_dataset=data, processing_class=tok, callbacks=[timer := step_timer()],
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    trainer.train()
    iters = [sum(timer.times[i:i + per_iter]) for i in range(0, len(timer.times), per_iter)][1:]
    return {"iteration_s": [round(t, 2) for t in iters], "median_s": statistics.median(iters),
            "response_tokens_per_s": sum(tokens[1:]) / sum(iters)}


def distributed(model: str, demos: list[dict], args, out: Path) -> dict:
    """SFT with the same global batch on 1 process (the plain path) and on N (DDP on CPU with gloo,
    `accelerate launch` with the shipped ddp_cpu config), one torch thread per process. The first step
    is warm-up and dropped. Wall time per sample says what N processes buy; CPU-seconds per sample
    (rank 0's CPU time per step x N) against one process is the overhead of the distributed path
    itself (gradient all-reduce, the shared batch's smaller per-rank matmuls, the metric
    reductions). CPU time, not wall x N, because on a loaded machine a process does not get its core."""
    import os
    import subprocess

    from rlhf.launch import launch_command

    data = out / "demos.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in demos))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    results = {}
    for n in args.processes:
        stage = ["sft", "--data", str(data), "--base", model, "--out", str(out / f"sft-{n}p"),
                 "--set", f"batch_size={args.batch}", "--set", f"max_steps={args.steps}", "--set", "eval_fraction=0",
                 "--set", f"precision={args.precision}", "--set", "save_every=0", "--set", "device=cpu",
                 *(["--set", json.dumps({"r": args.lora}).join(["lora=", ""])] if args.lora else [])]
        cmd = launch_command(stage, processes=n, config="ddp_cpu") if n > 1 else [sys.executable, "-m", "rlhf", *stage]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise SystemExit(f"{n} processes failed:\n{done.stderr[-3000:]}")
        steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"step"')][1:]
        seconds = sum(h["step_time_s"] for h in steps)
        cpu = sum(h["step_cpu_s"] for h in steps)
        samples = sum(h["batch_size"] for h in steps)
        results[n] = {"steps": len(steps), "samples": samples, "processes": steps[-1]["processes"],
                      "wall_s_per_sample": seconds / samples, "cpu_s_per_sample": n * cpu / samples,
                      "tokens_per_s": sum(h["tokens"] for h in steps) / seconds,
                      "step_s": [round(h["step_time_s"], 2) for h in steps]}
    base = results[min(results)]
    for r in results.values():
        r["overhead_per_sample"] = r["cpu_s_per_sample"] / base["cpu_s_per_sample"] - 1
        r["speedup_wall"] = base["wall_s_per_sample"] / r["wall_s_per_sample"]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model(), help="HF model directory (default: bundled SmolLM2)")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per stage")
    ap.add_argument("--batch", type=int, default=8, help="examples (pairs) per step")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--ppo-iterations", type=int, default=2)
    ap.add_argument("--ppo-epochs", type=int, default=4)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--group", type=int, default=4, help="rloo: responses per prompt")
    ap.add_argument("--stages", default="sft,reward,dpo,ppo,rloo,precision")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--processes", type=int, nargs="+", help="only measure SFT on these process counts (1 2)")
    ap.add_argument("--lora", type=int, default=0, help="with --processes: train a LoRA adapter of this rank")
    args = ap.parse_args()
    if not args.model:
        raise SystemExit("no model: pass --model DIR (a Hugging Face directory)")
    import torch

    stages = args.stages.split(",")
    demos, pairs = synthetic(args.batch * args.steps)
    print(f"model={args.model} torch_threads={torch.get_num_threads()} precision={args.precision} "
          f"steps={args.steps} batch={args.batch}", flush=True)
    results: dict = {}
    if args.processes:
        with tempfile.TemporaryDirectory() as tmp:
            results = distributed(args.model, synthetic(args.batch * args.steps)[0], args, Path(tmp))
        for n, r in results.items():
            print(f"sft {n} process(es): {r['wall_s_per_sample'] * 1000:.0f} ms/sample wall, "
                  f"{r['cpu_s_per_sample'] * 1000:.0f} CPU-ms/sample, overhead {100 * r['overhead_per_sample']:+.1f}% "
                  f"per sample, wall speed-up {r['speedup_wall']:.2f}x; steps {r['step_s']}", flush=True)
        print(json.dumps(results))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for stage in ("sft", "reward", "dpo"):
            if stage not in stages:
                continue
            mine = ours(stage, args.model, demos, pairs, args, out, args.precision)
            line = f"{stage:7s} ours {mine['tokens_per_s']:8.1f} tok/s ({mine['tokens']} tokens, steps {mine['step_s']})"
            results[stage] = {"ours": mine}
            if not args.skip_trl:
                theirs = trl_run(stage, args.model, demos, pairs, args, out, mine["tokens"])
                results[stage]["trl"] = theirs
                line += (f" | TRL {theirs['tokens_per_s']:8.1f} tok/s (steps {theirs['step_s']})"
                         f" | ours/TRL {mine['tokens_per_s'] / theirs['tokens_per_s']:.2f}x")
            print(line, flush=True)
        if "ppo" in stages:
            results["ppo"] = ppo(args.model, args, out)
            for it in results["ppo"]["iterations"]:
                print(f"ppo     iteration {it['iteration_time_s']:.1f}s = generate {it['time_generate_s']:.1f}s"
                      f" + score {it['time_score_s']:.1f}s + logprobs/values {it['time_forward_s']:.1f}s"
                      f" + update {it['time_update_s']:.1f}s; {it['response_tokens']} response tokens,"
                      f" {it['tokens_per_s']:.1f} tok/s", flush=True)
        if "rloo" in stages:
            mine = ours_rloo(args.model, args, out)
            results["rloo"] = {"ours": mine}
            line = (f"rloo    ours {mine['median_s']:.1f} s/iteration ({mine['response_tokens_per_s']:.1f} response tok/s,"
                    f" {mine['iteration_s']})")
            if not args.skip_trl:
                theirs = trl_rloo(args.model, args, out)
                results["rloo"]["trl"] = theirs
                line += (f" | TRL RLOO {theirs['median_s']:.1f} s/iteration ({theirs['iteration_s']})"
                         f" | ours/TRL rate {theirs['median_s'] / mine['median_s']:.2f}x")
            print(line, flush=True)
        if "precision" in stages:
            fp32 = ours("sft", args.model, demos, pairs, args, out, "fp32")
            bf16 = results.get("sft", {}).get("ours") if args.precision == "bf16" else None
            bf16 = bf16 or ours("sft", args.model, demos, pairs, args, out, "bf16")
            results["precision"] = {"fp32": fp32, "bf16": bf16}
            print(f"sft     fp32 {fp32['tokens_per_s']:.1f} tok/s, bf16 autocast {bf16['tokens_per_s']:.1f} tok/s:"
                  f" bf16/fp32 {bf16['tokens_per_s'] / fp32['tokens_per_s']:.2f}x", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
