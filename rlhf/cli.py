"""Command line: every stage on JSONL files, so the library works without the service.

    python -m rlhf sft --data demos.jsonl --base BASE_DIR --out OUT_DIR [--config cfg.json] [--set k=v]
    python -m rlhf reward --data pairs.jsonl --base SFT_DIR --out RM_DIR
    python -m rlhf ppo --data prompts.jsonl --policy SFT_DIR (--reward-model RM_DIR | --scorer numeric) --out DIR
    python -m rlhf dpo --data pairs.jsonl --policy SFT_DIR --out DIR
    python -m rlhf generate --model DIR (--prompt TEXT | --data prompts.jsonl) [--strategy top_p ...]
    python -m rlhf tokenize --model DIR --text TEXT
    python -m rlhf train-bpe --data corpus.txt --vocab-size 8000 --out DIR

Training stages print one JSON line per step; Ctrl-C (or creating the --stop-file) cancels between
steps and keeps the resumable state (exit code 130), so the same command continues the run. Every
stage runs the same under `accelerate launch [--config_file rlhf/accelerate_configs/ddp.yaml]
--num_processes N -m rlhf <stage> ...`: rank 0 prints, writes --events and saves; a stop seen by
any rank stops all, and a cancelled launch exits 0 with "cancelled": true in its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; a bad line fails with its line number."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    return records


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_config(cls: type, config_file: str | None, overrides: list[str]) -> Any:
    """A config dataclass from an optional JSON file plus key=value overrides (values as JSON),
    checked the way the service checks a job's config (rlhf.validation.config_from_dict)."""
    from rlhf.validation import config_from_dict

    values: dict[str, Any] = json.loads(Path(config_file).read_text()) if config_file else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        values[key] = _parse_value(value)
    config, errors = config_from_dict(cls, values)
    if errors:
        raise SystemExit("\n".join(f"{cls.__name__}.{k}: {v}" for k, v in errors.items()))
    return config


class _Events:
    """What rank 0 tells whoever runs it: a JSON line on stdout per step, and, with --events, one
    line per step, stage and result in that file (the service's runner follows it)."""

    def __init__(self, path: str | None, main: bool):
        self.main = main
        self.fh = open(path, "a", encoding="utf-8") if path and main else None  # noqa: SIM115

    def write(self, event: str, **fields: Any) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps({"event": event, **fields}, default=str) + "\n")
            self.fh.flush()

    def on_step(self, metrics: dict) -> None:
        if self.main:
            print(json.dumps(metrics, default=str), flush=True)
        self.write("step", metrics=metrics)

    def on_stage(self, label: str) -> None:
        self.write("stage", stage=label)


class _Interrupt:
    """Ctrl-C asks the stage to stop at the next step boundary instead of killing it mid-write;
    the previous handler comes back when the stage ends."""

    def __init__(self) -> None:
        self.stop = False
        self.previous: Any = None

    def __enter__(self) -> _Interrupt:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_: Any) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, *_: Any) -> None:
        self.stop = True
        print("stopping after this step ...", file=sys.stderr, flush=True)

    def __call__(self) -> bool:
        return self.stop


class _StopFile:
    """A stop asked for by creating a file (how the service's runner cancels a launched job; every
    rank looks, and the stage's World makes one rank's yes everyone's)."""

    def __init__(self, interrupt: _Interrupt, path: str | None):
        self.interrupt, self.path = interrupt, Path(path) if path else None

    def __call__(self) -> bool:
        return self.interrupt() or (self.path is not None and self.path.exists())


def _stage_args(p: argparse.ArgumentParser, model_flag: str) -> None:
    p.add_argument("--data", required=True, help="JSONL file")
    p.add_argument(model_flag, required=True, help="Hugging Face model directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", help="JSON file with config fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--stop-file", help="stop (keeping the resumable state) once this file exists")
    p.add_argument("--events", help="append JSON lines (steps, stages, the result) to this file")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m rlhf", description="RLHF training library")
    sub = root.add_subparsers(dest="command", required=True)
    _stage_args(sub.add_parser("sft", help="supervised fine-tuning on demonstrations"), "--base")
    _stage_args(sub.add_parser("reward", help="train a reward model on pairs"), "--base")
    ppo = sub.add_parser("ppo", help="PPO against a reward model or a scorer")
    _stage_args(ppo, "--policy")
    ppo.add_argument("--reward-model")
    ppo.add_argument("--scorer", help='scorer name or JSON, e.g. numeric or {"scorer": "regex", "pattern": "^yes"}')
    _stage_args(sub.add_parser("dpo", help="DPO on pairs"), "--policy")
    gen = sub.add_parser("generate", help="sample completions")
    gen.add_argument("--model", required=True)
    gen.add_argument("--prompt", help="one raw-text prompt")
    gen.add_argument("--chat", action="store_true", help="send --prompt as a user message (chat template)")
    gen.add_argument("--data", help='JSONL of {"prompt": ...}')
    gen.add_argument("--n", type=int, default=1)
    gen.add_argument("--strategy", default="top_p")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=50)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--stop", action="append", default=[])
    gen.add_argument("--stream", action="store_true", help="print text as it is generated (one prompt)")
    tok = sub.add_parser("tokenize", help="show the token pieces and ids of a text")
    tok.add_argument("--model", required=True, help="model or tokenizer directory")
    tok.add_argument("--text", required=True)
    bpe = sub.add_parser("train-bpe", help="train a byte-level BPE tokenizer on a text file")
    bpe.add_argument("--data", required=True, help="text file, one document per line")
    bpe.add_argument("--vocab-size", type=int, required=True)
    bpe.add_argument("--out", required=True)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in ("sft", "reward", "ppo", "dpo"):
        return _stage_command(args)
    if args.command == "generate":
        return _generate(args)
    if args.command == "tokenize":
        from rlhf.models import load_tokenizer
        from rlhf.tokenization import token_pieces

        print(json.dumps(token_pieces(load_tokenizer(args.model), args.text), ensure_ascii=False))
        return 0
    from rlhf.tokenization import train_bpe

    with open(args.data, encoding="utf-8") as fh:
        tokenizer = train_bpe((line.rstrip("\n") for line in fh), args.vocab_size)
    tokenizer.save_pretrained(args.out)
    print(json.dumps({"out_dir": args.out, "vocab_size": len(tokenizer)}))
    return 0


def _stage_command(args: argparse.Namespace) -> int:
    from rlhf.distributed import die_with_launcher, launch_rank, launch_size
    from rlhf.stages import STAGES

    stage = STAGES[args.command]
    data = read_jsonl(args.data)
    config = build_config(stage.config_class(), args.config, args.set)
    events = _Events(args.events, main=launch_rank(config.device) == 0)
    launched = launch_size(config.device) > 1
    if launched:
        die_with_launcher()
    with _Interrupt() as interrupt:
        try:
            result = _run_stage(args, stage, data, config, events, _StopFile(interrupt, args.stop_file))
        except Exception as exc:
            events.write("error", error=f"{type(exc).__name__}: {exc}")
            raise
    summary = {"out_dir": result.out_dir, "cancelled": result.cancelled, "metrics": result.metrics}
    events.write("result", **summary)
    if events.main:
        print(json.dumps(summary, default=str))
    # 130 tells a shell that the run stopped with its state kept; a launched rank exits 0 instead, as
    # torchrun takes any other code for a crash and tears the group down: the result line says it.
    return 130 if result.cancelled and not launched else 0


def _run_stage(args: argparse.Namespace, stage: Any, data: list[dict], config: Any, events: _Events,
               stop: Any) -> Any:
    common = {"on_step": events.on_step, "should_stop": stop, "on_stage": events.on_stage}
    if args.command == "ppo":  # the one stage with a reward source beside its policy
        scorer = _parse_value(args.scorer) if args.scorer else None
        return stage.train_function()(config, data, args.policy, args.reward_model, args.out, scorer=scorer, **common)
    start = args.base if args.command in ("sft", "reward") else args.policy
    return stage.train_function()(config, data, start, args.out, **common)


def _generate(args: argparse.Namespace) -> int:
    from rlhf.models import load_policy
    from rlhf.sampling import SamplingConfig, generate, generate_stream

    config = SamplingConfig(strategy=args.strategy, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, stop=args.stop)
    try:
        config.validate()
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    if (args.prompt is None) == (args.data is None):
        raise SystemExit("give exactly one of --prompt and --data")
    prompts: list[Any] = ([[{"role": "user", "content": args.prompt}] if args.chat else args.prompt]
                          if args.prompt is not None else [r["prompt"] for r in read_jsonl(args.data)])
    model, tokenizer = load_policy(args.model)
    if args.stream:
        for delta in generate_stream(model, tokenizer, prompts[0], config):
            print(delta, end="", flush=True)
        print()
        return 0
    for prompt, gens in zip(prompts, generate(model, tokenizer, prompts, config, n=args.n), strict=True):
        for g in gens:
            print(json.dumps({"prompt": prompt, **dataclasses.asdict(g)}, ensure_ascii=False))
    return 0
