"""A training job on several processes: the worker runs `accelerate launch ... -m rlhf <stage>` as a
subprocess (rlhf.launch builds the command) and still speaks for it through the job row. The stage's
rank 0 writes its steps, stages and result to an events file that the worker follows into the
reporter (progress, metrics, ETA); a cancel or the wall-time limit becomes the stop file every rank
looks at; a launch that dies fails the job with the last lines of its output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from django.conf import settings

from .kinds import build_config
from .models import TrainingJob
from .reporter import JobCancelled, JobReporter, persist
from .services.jobs import job_log

CLI_STAGE = {"sft": "sft", "reward_model": "reward", "ppo": "ppo", "dpo": "dpo"}
STOP_GRACE_SECONDS = 120.0  # after the stop file, how long the processes get to save and exit before SIGTERM
POLL_SECONDS = 0.2
TAIL_LINES = 30


class LaunchFailed(RuntimeError):
    """The launched processes ended without a result (a crash, a kill, an out-of-memory)."""


def is_launched(config: dict) -> bool:
    """Whether a job runs as an accelerate launch rather than inside the worker process."""
    return int(config.get("processes") or 1) > 1 or bool(config.get("accelerate_config"))


def _parent_death_signal() -> Any:
    # The launcher gets SIGTERM when the worker dies (torchrun passes it to the ranks), so a killed
    # worker leaves no training running behind it. libc is loaded here, not in the forked child.
    from enginectl.engine_process import parent_death_signal_hook

    return parent_death_signal_hook()


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class _Follower:
    """Reads new lines of the events file into the reporter."""

    def __init__(self, path: Path, reporter: JobReporter):
        self.path, self.reporter, self.offset = path, reporter, 0
        self.result: dict | None = None
        self.error: str | None = None

    def drain(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as fh:
            fh.seek(self.offset)
            while (line := fh.readline()).endswith("\n"):
                self.offset = fh.tell()
                event = json.loads(line)
                kind = event.pop("event")
                if kind == "step":
                    self.reporter.on_step(event["metrics"])
                elif kind == "stage":
                    self.reporter.on_stage(event["stage"])
                elif kind == "result":
                    self.result = event
                elif kind == "error":
                    self.error = event["error"]


def run_launched(job: TrainingJob, reporter: JobReporter, *, data: list[dict], policy_dir: str, out_dir: Path,
                 extra: dict) -> dict:
    """Run the job's stage as an accelerate launch; returns its final metrics, raises JobCancelled
    when it stopped on request (its resumable state kept) and LaunchFailed when it died."""
    import torch

    from rlhf.launch import default_config, launch_command

    work = out_dir.with_name(out_dir.name + ".launch")  # inputs, events and output of the launch
    work.mkdir(parents=True, exist_ok=True)
    stop, events, output = work / "stop", work / "events.jsonl", work / "output.log"
    for stale in (stop, events):  # a relaunch must not stop at once or replay the last run's steps
        stale.unlink(missing_ok=True)
    (work / "data.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in data))
    config = build_config(job.kind, job.config)
    (work / "config.json").write_text(json.dumps({f.name: getattr(config, f.name) for f in fields(config)},
                                                 default=lambda o: o.__dict__))
    stage = CLI_STAGE[job.kind]
    args = [stage, "--data", str(work / "data.jsonl"), "--policy" if stage in ("ppo", "dpo") else "--base",
            policy_dir, "--out", str(out_dir), "--config", str(work / "config.json"), "--stop-file", str(stop),
            "--events", str(events)]
    if extra.get("reward_model"):
        args += ["--reward-model", extra["reward_model"]]
    if extra.get("scorer") is not None:
        args += ["--scorer", json.dumps(extra["scorer"])]
    processes = int(job.config.get("processes") or 1)
    name = job.config.get("accelerate_config") or default_config(torch.cuda.is_available())
    cmd = launch_command(args, processes=processes, config=name)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    with open(output, "ab") as log_fh:
        proc = subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env, stdout=log_fh, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_parent_death_signal())
    persist(lambda: job_log(job=job, message=f"launched {processes} processes with accelerate config {name} "
                                             f"(pid {proc.pid}); output in {output.name}"))
    follower = _Follower(events, reporter)
    stop_sent: float | None = None
    while (code := proc.poll()) is None:
        follower.drain()
        if stop_sent is None and reporter.should_stop():
            stop.touch()
            stop_sent = time.monotonic()
            persist(lambda: job_log(job=job, message="stop asked of the launched processes"))
        elif stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_SECONDS:
            os.killpg(proc.pid, signal.SIGTERM)
            stop_sent = float("inf")  # once
        time.sleep(POLL_SECONDS)
    follower.drain()
    with contextlib.suppress(ProcessLookupError, PermissionError):  # whatever is left of the launch
        os.killpg(proc.pid, signal.SIGKILL)
    result = follower.result
    if code == 0 and result is not None:
        if result["cancelled"]:
            raise JobCancelled()
        shutil.rmtree(work, ignore_errors=True)
        return result["metrics"]
    if stop_sent is not None:  # stopped on request but could not finish cleanly: its last state stays
        raise JobCancelled()
    why = follower.error or f"exit code {code}"
    raise LaunchFailed(f"the launched processes failed ({why}); last lines of their output:\n{_tail(output)}")
