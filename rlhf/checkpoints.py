"""Checkpoints: every result is a plain Hugging Face directory (safetensors, config, tokenizer,
chat template) with the training config, data summary and metrics beside it; plus the private
training state that makes a stage resumable.

Durability: a model directory is written once. It is built in a temporary sibling, every file and
directory in it is fsync'd, and only then is it renamed into place, so a crash at any moment
leaves either no directory or a complete one, never a half-written one, and never deletes an
existing model. The resumable state lives beside the model directory (`<out>.state/`), written
the same way, and is removed once the model is in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

RLHF_CONFIG_FILE = "rlhf_config.json"
METRICS_FILE = "metrics.json"
DATA_SUMMARY_FILE = "data_summary.json"
STATE_SUFFIX = ".state"  # <out_dir>.state holds a stage's resumable state until its model is saved
STATE_FILE = "state.pt"


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file below `path`, then every directory bottom-up, so that a rename after this
    publishes contents that are already on disk."""
    for root, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def partial_prefix(out: Path) -> str:
    """Name prefix of the temporary siblings `atomic_directory` builds `out` in."""
    return f".{out.name}.partial-"


def remove_partials(out: str | Path) -> list[Path]:
    """Delete what crashed writers of `out` left behind (call it only when no writer of `out` runs)."""
    out = Path(out)
    removed = []
    if out.parent.is_dir():
        for leftover in out.parent.glob(partial_prefix(out) + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def check_new_output(out_dir: str | Path) -> None:
    """Fail before any work when a stage's output directory already holds something: a model
    directory belongs to one run (its resumable state is kept beside it, not in it)."""
    if Path(out_dir).exists():
        raise FileExistsError(f"{out_dir} already exists; a model directory is written once (choose a new one)")


@contextlib.contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to write into; when the block ends without error, fsync it
    and rename it to `out`. `out` must not exist: a directory is never replaced, so nothing a
    registered model points to is ever deleted. On error the temporary directory is removed."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; a model directory is written once (choose a new one)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(out), dir=out.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if out.exists():  # someone else published it meanwhile: never overwrite
            raise FileExistsError(f"{out} appeared while it was being written; nothing was replaced")
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write a JSON file by rename, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(_jsonable(obj), indent=2, sort_keys=True, default=str))
        fh.flush()
        os.fsync(fh.fileno())
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
                   extra_json: dict[str, Any] | None = None, merge_lora: bool = True,
                   state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the model as a HF directory, atomically (see the module docstring), then drop the
    stage's resumable state, which the finished model supersedes.

    A peft model is merged into plain weights when `merge_lora` (then transformers and vLLM load it
    as it is); otherwise the adapter is saved and `load_policy` merges it on load. `state_dict`: the
    weights gathered from a sharded engine (FSDP, DeepSpeed), saved instead of the module's own.
    """
    out = Path(out_dir)
    if hasattr(model, "merge_and_unload") and merge_lora:
        model = model.merge_and_unload()
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / RLHF_CONFIG_FILE, {"stage": stage, "base": base, "config": _jsonable(config)})
        write_json(tmp / METRICS_FILE, metrics)
        write_json(tmp / DATA_SUMMARY_FILE, summary)
        for name, obj in (extra_json or {}).items():
            write_json(tmp / name, obj)
    shutil.rmtree(state_dir(out), ignore_errors=True)
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


def state_dir(out_dir: str | Path) -> Path:
    """Where the stage writing `out_dir` keeps its resumable state: a sibling, so the model
    directory itself is only ever created whole."""
    out = Path(out_dir)
    return out.with_name(out.name + STATE_SUFFIX)


def save_training_state(out_dir: str | Path, state: dict[str, Any]) -> Path:
    """Everything a resumed run needs beyond the config (trainable weights, optimizer, RNG,
    counters), as one torch file. Written to a temporary file, fsync'd, then renamed over the
    previous state: a crash leaves the previous state or the new one."""
    folder = state_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (STATE_FILE + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(folder / STATE_FILE)
    fsync_dir(folder)
    return folder / STATE_FILE


def load_training_state(out_dir: str | Path) -> dict[str, Any] | None:
    folder = state_dir(out_dir)
    path = next((p for p in (folder / STATE_FILE, folder / SHARDED / STATE_FILE, folder / (SHARDED + ".old") / STATE_FILE)
                 if p.is_file()), None)
    if path is None:
        return None
    # weights_only=False: the state holds RNG tuples and plain dicts we wrote ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (all of them, or a LoRA adapter and new heads): what a
    resumable state must keep; frozen weights come back from the base checkpoint."""
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put back what `trainable_state` saved; every trainable parameter must be in it."""
    params = dict(module.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise ValueError(f"resumable state does not fit the model: missing {missing[:3]}, unknown {unknown[:3]}; "
                         "was it saved with another config?")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


SHARDED = "sharded"  # <out>.state/sharded: accelerate's state of a sharded engine, with our counters


def save_world_state(world: Any, out_dir: str | Path, make_state: Any) -> None:
    """The resumable state of a run on `world` (rlhf.distributed.World). Plain or DDP: the weights
    and optimizer are the same on every rank, so rank 0 writes the one state file, which any number
    of processes can resume. FSDP and DeepSpeed: every rank writes its shard through accelerate's
    save_state into a new directory with the counters beside it, and rank 0 swaps it in."""
    if not world.sharded:
        if world.is_main:
            save_training_state(out_dir, make_state())
        world.barrier()
        return
    folder = state_dir(out_dir)
    new, current, old = folder / (SHARDED + ".partial"), folder / SHARDED, folder / (SHARDED + ".old")
    if world.is_main:
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
    world.barrier()
    world.accelerator.save_state(str(new))
    if world.is_main:
        torch.save(make_state(), new / STATE_FILE)
    world.barrier()
    if world.is_main:
        fsync_tree(new)
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            os.rename(current, old)
        os.rename(new, current)  # a crash before this line leaves `old`, which load_training_state reads
        fsync_dir(folder)
        shutil.rmtree(old, ignore_errors=True)
    world.barrier()


def load_sharded_state(world: Any, out_dir: str | Path) -> None:
    folder = state_dir(out_dir)
    path = next(p for p in (folder / SHARDED, folder / (SHARDED + ".old")) if (p / STATE_FILE).is_file())
    world.accelerator.load_state(str(path))


def check_resumable_world(state: dict[str, Any], world: Any) -> None:
    """Where a run may resume with another number of processes: from a plain or DDP state, on any
    number (the state holds whole weights and optimizer); from FSDP or DeepSpeed state only on the
    same engine with the same number of processes (its optimizer state is split per rank; DeepSpeed's
    universal-checkpoint conversion or a full-state export would be needed to change it)."""
    engine, processes = state.get("engine", "single"), state.get("processes", 1)
    saved_sharded, now_sharded = engine in ("fsdp", "deepspeed"), world.sharded
    if (saved_sharded or now_sharded) and (engine != world.engine or processes != world.size):
        raise ValueError(f"the saved state is from {engine} on {processes} process(es); this run is {world.engine} on "
                         f"{world.size}: a sharded state resumes only on the same engine and number of processes")
