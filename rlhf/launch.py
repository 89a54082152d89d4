"""How a stage is started on several processes: `accelerate launch` with one of the shipped
accelerate config files (rlhf/accelerate_configs) running `python -m rlhf <stage>`. The service's
runner and the tests build the command here; the engines themselves are accelerate's."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "accelerate_configs"


def shipped_configs() -> list[str]:
    """The names of the shipped accelerate configs (ddp_cpu, ddp, fsdp, zero3)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown accelerate config {name!r}; shipped: {', '.join(shipped_configs())}")
    return path


def default_config(cuda: bool) -> str:
    """DDP on the GPUs when there are any, else DDP on the CPU."""
    return "ddp" if cuda else "ddp_cpu"


def free_port() -> int:
    """A port for the rendezvous of one launch (two jobs on one host must not share 29500)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(stage_args: list[str], *, processes: int, config: str, port: int | None = None,
                   module: str | None = "rlhf") -> list[str]:
    """argv of `accelerate launch --config_file <shipped> --num_processes N -m rlhf <stage_args>`
    (module None: stage_args start with a script). Started with this interpreter's accelerate, so
    it runs in the same environment."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path(config)),
            "--num_processes", str(processes), "--main_process_port", str(port or free_port()),
            *(["-m", module] if module else []), *stage_args]
