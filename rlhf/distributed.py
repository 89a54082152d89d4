"""The world a stage runs in: one process, or one rank of many under `accelerate launch` (DDP on CPU
with gloo or on GPUs, FSDP and DeepSpeed through accelerate's config files). Everything the stages
do differently with several processes goes through this object: seeds per rank, the share of a
global batch each rank computes, statistics and metrics reduced over all ranks, results gathered,
a stop agreed by all, and writes left to rank 0. The engines are accelerate's; none of our own.

Alone (also under `accelerate launch --num_processes 1` without FSDP/DeepSpeed) a stage takes the
plain single-process path: no Accelerator is made, because its process-wide state fixes settings
once per process while one service worker runs stages with different settings one after another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.models import resolve_device

# Metrics that add up over ranks (counts); every other number is a mean weighted by each rank's share.
SUMMED = frozenset({"tokens", "response_tokens", "examples", "pairs", "batch_size"})
ENGINES = ("single", "ddp", "fsdp", "deepspeed")


@dataclass
class World:
    rank: int
    size: int
    device: torch.device
    engine: str  # single | ddp | fsdp | deepspeed
    accelerator: Any = None  # accelerate.Accelerator when distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.accelerator is not None

    @property
    def sharded(self) -> bool:
        """Weights and optimizer state split across ranks: resumable state is accelerate's own."""
        return self.engine in ("fsdp", "deepspeed")

    def describe(self) -> dict[str, Any]:
        return {"processes": self.size, "engine": self.engine, "device": str(self.device)}

    # --- seeds and data -------------------------------------------------------------------------
    def rank_seed(self, seed: int | None) -> int | None:
        """Each rank its own random stream (seed + rank); rank 0 keeps the single-process one."""
        return None if seed is None else seed + self.rank

    def share(self, items: Sequence[Any]) -> list[Any]:
        """This rank's contiguous part of a global batch (sizes differ by at most one; a rank may get
        none when the batch is smaller than the world)."""
        n = len(items)
        start = self.rank * n // self.size
        return list(items[start:(self.rank + 1) * n // self.size])

    # --- reductions -----------------------------------------------------------------------------
    def sum(self, value: torch.Tensor | float) -> torch.Tensor:
        """Sum over ranks (a copy; float64 on CPU so counts and sums of squares stay exact)."""
        t = torch.as_tensor(value, dtype=torch.float64).clone()
        if not self.distributed:
            return t
        from accelerate.utils import reduce

        return reduce(t.to(self.device), reduction="sum").cpu()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any: how a stop seen by one rank stops all."""
        return bool(self.sum(1.0 if flag else 0.0) > 0) if self.distributed else bool(flag)

    def reduce_metrics(self, metrics: dict[str, Any], weight: float) -> dict[str, Any]:
        """Global metrics from each rank's: counts summed, other numbers averaged with each rank's
        `weight` (its examples or tokens); non-numbers are rank 0's. Every rank gets the same dict."""
        if not self.distributed:
            return dict(metrics)
        keys = sorted(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
        values = torch.tensor([float(metrics[k]) * (1.0 if k in SUMMED else weight) for k in keys] + [weight],
                              dtype=torch.float64)
        total = self.sum(values)
        out = dict(metrics)
        for i, k in enumerate(keys):
            value = float(total[i]) if k in SUMMED else float(total[i] / total[-1].clamp(min=1e-12))
            out[k] = int(round(value)) if isinstance(metrics[k], int) and k in SUMMED else value
        return out

    def gather(self, rows: list[Any]) -> list[Any]:
        """Every rank's list, concatenated in rank order, on every rank."""
        if not self.distributed:
            return list(rows)
        from accelerate.utils import gather_object

        return gather_object(list(rows))

    def map_shards(self, items: Sequence[Any], fn: Callable[[list[Any]], torch.Tensor]) -> torch.Tensor:
        """fn over the items split across ranks, rows gathered back in order: [len(items), ...].

        Shards are padded to one length (repeating the last item, dropped afterwards) so that every
        rank runs the same number of forward passes, which FSDP and ZeRO-3 need."""
        if not self.distributed or not items:
            return fn(list(items))
        per = -(-len(items) // self.size)
        mine = list(items[self.rank * per:(self.rank + 1) * per])
        real = len(mine)
        mine += [items[-1]] * (per - real)
        out = fn(mine).cpu()
        rows = self.gather([out[i] for i in range(real)])
        return torch.stack(rows) if rows else out[:0]

    def barrier(self) -> None:
        if self.distributed:
            self.accelerator.wait_for_everyone()

    # --- the engine -----------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> tuple[Any, Any, Any]:
        """The model wrapped by the engine (DDP, FSDP, DeepSpeed) with its optimizer and schedule;
        unchanged alone. Call once, with all three (DeepSpeed and FSDP2 need them together)."""
        if not self.distributed:
            return model, optimizer, scheduler
        return tuple(self.accelerator.prepare(model, optimizer, scheduler))

    def backward(self, loss: torch.Tensor) -> None:
        if self.distributed:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> float:
        """Clip by the global norm (over all ranks' shards under FSDP); the norm before clipping."""
        if self.distributed:
            norm = self.accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
            return float(norm) if norm is not None else float("nan")  # DeepSpeed clips inside its step
        if max_norm > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))

    def eval_model(self, trained: Any, raw: Any) -> Any:
        """The module to run evaluation forwards on: the wrapped one where the engine shards weights
        (every rank must take part), the plain one otherwise (no gradient sync to prepare)."""
        return trained if self.sharded else raw

    def full_state_dict(self, trained: Any) -> dict[str, torch.Tensor] | None:
        """The whole model's weights gathered for saving (sharded engines; a collective), else None:
        the plain module saves itself."""
        return self.accelerator.get_state_dict(trained) if self.sharded else None


def single(device: str | None = None) -> World:
    return World(0, 1, resolve_device(device), "single")


def _on_cpu(device: str | None) -> bool:
    # accelerate forms a CPU (gloo) process group only when asked for the CPU.
    return resolve_device(device).type == "cpu"


def launch_rank(device: str | None = None) -> int:
    """This process's rank as accelerate's launcher set it (0 alone), without making an Accelerator."""
    from accelerate import PartialState

    return PartialState(cpu=_on_cpu(device)).process_index


def launch_size(device: str | None = None) -> int:
    """How many processes accelerate's launcher started for this run (1 alone)."""
    from accelerate import PartialState

    return PartialState(cpu=_on_cpu(device)).num_processes


def die_with_launcher() -> None:
    """Make this rank get SIGTERM when its launcher dies (Linux). torchrun starts each rank in a session
    of its own, so a launcher killed outright (SIGKILL, the OOM killer) would leave its ranks training
    on, unseen, beside the relaunch that replaces them."""
    import ctypes
    import os
    import signal

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return
    prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the launcher died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def world_for(device: str | None = None, precision: str = "fp32") -> World:
    """The world this process was launched into. accelerate's launcher describes it (the process
    group variables, and its own flags for FSDP and DeepSpeed), so it is accelerate that reads them."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    engine = ("deepspeed" if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") else
              "fsdp" if parse_flag_from_env("ACCELERATE_USE_FSDP") else None)
    state = PartialState(cpu=_on_cpu(device))
    if engine is None and state.num_processes <= 1:
        return single(device)
    from accelerate import Accelerator

    # Our own autocast does the forward passes (as alone); only DeepSpeed needs the precision
    # itself, as it keeps the weights it trains in that dtype.
    mixed = {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no") if engine == "deepspeed" else "no"
    try:
        accelerator = Accelerator(mixed_precision=mixed, step_scheduler_with_optimizer=False,
                                  cpu=_on_cpu(device))
    except ValueError as exc:
        raise ValueError(f"{exc} (under accelerate launch one process runs one stage)") from exc
    if engine == "deepspeed":
        # DeepSpeed wants a micro-batch size, which accelerate reads from a prepared dataloader; we
        # prepare none (the loop shares its own global batches), and accumulate nothing.
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = 1
    return World(accelerator.process_index, accelerator.num_processes, accelerator.device, engine or "ddp",
                 accelerator)
