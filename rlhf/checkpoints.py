"""Checkpoints: every result is a plain Hugging Face directory (safetensors, config, tokenizer,
chat template) with the training config, data summary and metrics beside it; plus the private
training state that makes a stage resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

RLHF_CONFIG_FILE = "rlhf_config.json"
METRICS_FILE = "metrics.json"
DATA_SUMMARY_FILE = "data_summary.json"
TRAINING_STATE_DIR = "training_state"  # inside out_dir, removed when a stage finishes


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def data_summary(records: list[dict], **extra: Any) -> dict[str, Any]:
    """What a model was trained on, without the data itself: count, keys and a content hash."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps(r, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    keys = sorted({k for r in records for k in r})
    return {"count": len(records), "keys": keys, "sha256": digest.hexdigest(), **extra}


def save_model_dir(model: Any, tokenizer: Any, out_dir: str | Path, *, stage: str, config: Any,
                   metrics: dict[str, Any], summary: dict[str, Any], base: str | None = None,
                   extra_json: dict[str, Any] | None = None, merge_lora: bool = True) -> Path:
    """Write the model as a HF directory, atomically: a crash leaves no half-written checkpoint.

    A peft model is merged into plain weights when `merge_lora` (then transformers and vLLM load it
    as it is); otherwise the adapter is saved and `load_policy` merges it on load.
    """
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(model, "merge_and_unload") and merge_lora:
        model = model.merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / RLHF_CONFIG_FILE, {"stage": stage, "base": base, "config": _jsonable(config)})
    write_json(tmp / METRICS_FILE, metrics)
    write_json(tmp / DATA_SUMMARY_FILE, summary)
    for name, obj in (extra_json or {}).items():
        write_json(tmp / name, obj)
    # Keep a resumable state that lives in out_dir (PPO writes it there) out of the way.
    state = out / TRAINING_STATE_DIR
    if out.exists():
        if state.exists():
            shutil.rmtree(state)
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(out_dir: str | Path, state: dict[str, Any]) -> Path:
    """Everything a resumed run needs beyond the config (weights, optimizer, RNG, counters), as one
    torch file written atomically next to where the final model will go."""
    folder = Path(out_dir) / TRAINING_STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "state.pt")
    return folder / "state.pt"


def load_training_state(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / TRAINING_STATE_DIR / "state.pt"
    if not path.is_file():
        return None
    # weights_only=False: the state holds RNG tuples and plain dicts we wrote ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)
