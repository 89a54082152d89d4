"""EngineProcess without vLLM: a stand-in server (stdlib) takes the engine's command line, so the
start / ready / failure / stop-the-whole-group logic is checked in a second, on any machine."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from enginectl.engine_process import EngineConfig, EngineError, EngineProcess, free_port

FAKE_SERVER = textwrap.dedent('''
    import argparse, json, os, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    p = argparse.ArgumentParser()
    p.add_argument("-m"); p.add_argument("--port", type=int); p.add_argument("--served-model-name")
    p.add_argument("--host", default="127.0.0.1")
    args, _ = p.parse_known_args()
    mode = os.environ.get("FAKE_MODE", "ok")
    print("fake engine starting", " ".join(sys.argv[1:]), flush=True)
    if mode == "exit":
        print("RuntimeError: Unsupported CPU attention configuration", flush=True)
        sys.exit(3)
    # a grandchild, like vLLM's EngineCore and worker processes
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.environ["FAKE_PIDFILE"], "w").write(str(child.pid))
    if mode == "hang":
        time.sleep(600)
    if mode == "ignore_term":
        import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            body = b"" if self.path == "/health" else json.dumps(
                {"data": [{"id": args.served_model_name}]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
    HTTPServer((args.host, args.port), H).serve_forever()
''')


@pytest.fixture
def fake_python(tmp_path) -> Path:
    """An executable that stands in for the engine venv's python."""
    (tmp_path / "fake_engine.py").write_text(FAKE_SERVER)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "fake_engine.py"} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def make(tmp_path, fake_python, mode="ok", **overrides) -> EngineProcess:
    env = {"FAKE_MODE": mode, "FAKE_PIDFILE": str(tmp_path / "child.pid")}
    return EngineProcess(EngineConfig(model="/models/m", served_model_name="m", python=fake_python,
                                      log_path=tmp_path / "engine.log", env=env, **overrides))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_command_and_environment():
    config = EngineConfig(model="/m", served_model_name="policy", max_model_len=1024, dtype="bfloat16",
                          kv_cache_space_gib=3, enforce_eager=True, enable_lora=True, seed=7,
                          extra_args=["--max-num-seqs", "64"], env={"VLLM_LOGGING_LEVEL": "DEBUG"})
    cmd = config.command(Path("/venv/bin/python"), 8123)
    assert cmd[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    line = " ".join(cmd)
    for part in ("--model /m", "--served-model-name policy", "--port 8123", "--max-model-len 1024",
                 "--dtype bfloat16", "--enforce-eager", "--enable-lora", "--seed 7", "--max-num-seqs 64"):
        assert part in line
    env = config.environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" and int(env["OMP_NUM_THREADS"]) >= 1
    assert "VIRTUAL_ENV" not in env


def test_start_wait_and_stop_the_whole_group(tmp_path, fake_python):
    engine = make(tmp_path, fake_python)
    seconds = engine.start_and_wait(timeout=30)
    assert 0 < seconds < 30 and engine.is_running()
    assert engine.openai_url == f"http://127.0.0.1:{engine.port}/v1"
    child = int((tmp_path / "child.pid").read_text())
    assert alive(child) and len(engine.memory_rss_mib()) >= 2
    assert engine.stop() is not None
    assert not alive(child), "the server's child outlived stop()"
    assert engine.stop() is not None  # a second stop is harmless


def test_sigkill_after_grace_when_sigterm_is_ignored(tmp_path, fake_python):
    engine = make(tmp_path, fake_python, mode="ignore_term")
    engine.start_and_wait(timeout=30)
    start = time.monotonic()
    assert engine.stop(grace=1) == -signal.SIGKILL
    assert time.monotonic() - start < 10


def test_exit_before_ready_raises_with_the_log_tail(tmp_path, fake_python):
    engine = make(tmp_path, fake_python, mode="exit")
    with pytest.raises(EngineError, match="exited with code 3(.|\n)*Unsupported CPU attention"):
        engine.start_and_wait(timeout=30)


def test_timeout_raises_and_stops_the_server(tmp_path, fake_python):
    engine = make(tmp_path, fake_python, mode="hang")
    with pytest.raises(EngineError, match="not ready after 2 s(.|\n)*fake engine starting"):
        engine.start_and_wait(timeout=2)
    assert not engine.is_running()
    assert not alive(int((tmp_path / "child.pid").read_text()))


def test_another_server_on_the_port_is_not_taken_for_ours(tmp_path, fake_python):
    """Something else listening on the port (answering nothing we expect) is not 'ready'."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        engine = make(tmp_path, fake_python, port=port)
        with pytest.raises(EngineError):
            engine.start_and_wait(timeout=3)
        assert not engine.is_running()


def test_free_port_is_bindable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def test_missing_engine_venv_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_VENV", str(tmp_path / "nope"))
    with pytest.raises(EngineError, match="run scripts/ensure_engine.sh"):
        EngineProcess(EngineConfig(model="/m")).start()


def test_engine_dies_with_the_process_that_started_it(tmp_path, fake_python):
    """A crashed web process or test run must not leave an engine holding memory and a port."""
    import subprocess

    starter = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from enginectl.engine_process import EngineConfig, EngineProcess
            e = EngineProcess(EngineConfig(model="/m", served_model_name="m", python=Path({str(fake_python)!r}),
                                           log_path=Path({str(tmp_path / "engine.log")!r}),
                                           env={{"FAKE_PIDFILE": {str(tmp_path / "child.pid")!r}}}))
            e.start_and_wait(timeout=30)
            print(e.pid, flush=True)
            time.sleep(600)
        """)], cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    server_pid = int(starter.stdout.readline())
    assert alive(server_pid)
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 10
    while alive(server_pid):
        assert time.monotonic() < deadline, "the engine outlived the process that started it"
        time.sleep(0.1)
    # The stand-in does not pass SIGTERM on to its child as vLLM's server does; end it here.
    os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGKILL)


class _Stats:
    """A stand-in for the server's /health, /metrics and /v1/completions, set by the test."""

    def __init__(self):
        self.waiting, self.tokens, self.complete_after = 0, 10, 0.0

    def serve(self) -> tuple[object, int]:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stats = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/metrics":
                    self._send(f'vllm:num_requests_running{{model_name="m"}} 1.0\n'
                               f'vllm:num_requests_waiting{{model_name="m"}} {stats.waiting}.0\n'
                               f'vllm:prompt_tokens_total{{model_name="m"}} {stats.tokens}.0\n'
                               f'vllm:generation_tokens_total{{model_name="m"}} 5.0\n'.encode())
                else:
                    self._send(b"")

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(stats.complete_after)
                self._send(b'{"choices": [{"text": "x"}]}')

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, server.server_address[1]


def test_alive_tells_a_hung_engine_from_a_busy_one(monkeypatch):
    """/health alone says nothing of a hung engine core: idle, a 1-token completion must answer;
    with requests waiting, the token counters must move (load alone is no failure)."""
    from enginectl import engine_process

    stats = _Stats()
    server, port = stats.serve()
    try:
        engine = EngineProcess(EngineConfig(model="/m", port=port))
        assert engine_process.engine_stats(engine.base_url) == {"running": 1.0, "waiting": 0.0, "tokens": 15.0}
        assert engine.alive(timeout=2) is None  # idle: the completion answered
        stats.complete_after = 3
        assert "did not answer within 1 s" in engine.alive(timeout=1)  # idle and the completion hangs
        stats.complete_after, stats.waiting = 0, 4
        clock = [1000.0]
        monkeypatch.setattr(engine_process.time, "monotonic", lambda: clock[0])
        assert engine.alive(stall_s=60) is None  # first look at the counters
        clock[0] += 59
        assert engine.alive(stall_s=60) is None  # busy, no token yet, within the stall limit
        stats.tokens += 1
        clock[0] += 30
        assert engine.alive(stall_s=60) is None  # tokens moved: still busy and alive
        clock[0] += 61
        assert "no token processed in 61 s with 4 requests waiting" in engine.alive(stall_s=60)
    finally:
        server.shutdown()
