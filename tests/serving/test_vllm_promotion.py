"""Promotion under load with the real supervisor and two real vLLM engines: the old version answers
until the new one is ready, then the new one answers, the old one drains and stops, and no request
fails on the way. Then an old version asked for by id is started on demand.

Needs the memory of two engines, so the session's engine is stopped first (the next test that
needs it starts it again)."""

from __future__ import annotations

import os
import signal
import threading
import time

import openai
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

READY_TIMEOUT = 600


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(poll)


class Load:
    """Clients asking "latest" in a loop, half of them streaming; every answer and failure kept."""

    def __init__(self, client: openai.OpenAI, clients: int = 4):
        self.client, self.stop = client, threading.Event()
        self.answers: list[tuple[float, float, str]] = []  # (sent, answered, fingerprint)
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._loop, args=(i % 2 == 0,), daemon=True) for i in range(clients)]

    def _loop(self, streaming: bool) -> None:
        messages = [{"role": "user", "content": "hello world"}]
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                if streaming:
                    chunks = list(self.client.chat.completions.create(
                        model="latest", messages=messages, temperature=0, max_tokens=8, stream=True))
                    assert any(c.choices and c.choices[0].finish_reason for c in chunks), "stream without an end"
                    fingerprint = chunks[0].system_fingerprint
                else:
                    answer = self.client.chat.completions.create(model="latest", messages=messages, temperature=0,
                                                                 max_tokens=8)
                    assert answer.choices[0].finish_reason in ("stop", "length")
                    fingerprint = answer.system_fingerprint
                self.answers.append((sent, time.monotonic(), fingerprint))
            except Exception as exc:  # every failure counts, whatever its kind
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_promotion_under_load_swaps_engines_with_no_failed_request(live, demo, api_key, promote, settings,
                                                                   engine_session, engine_artifacts, tmp_path):
    from django.db import connection

    from serving.models import Engine
    from serving.supervisor import EngineSupervisor
    from tests.engine.fixtures import require_engine_venv

    require_engine_venv()
    engine_session.stop()  # room for the two engines of this test
    settings.RLHF_SERVING_ENGINE = "vllm"
    settings.ARTIFACTS_ROOT = engine_artifacts
    settings.RLHF_SERVING_ENGINE_KV_GIB = 1
    settings.RLHF_SERVING_ENGINE_MAX_MODEL_LEN = 512
    a, b = demo["a"], demo["b"]
    supervisor = EngineSupervisor(tick_seconds=0.5, max_engines=2, idle_seconds=1, drain_seconds=60,
                                  log_dir=tmp_path)
    stop = threading.Event()

    def supervise():
        try:
            supervisor.run(stop)
        finally:
            connection.close()

    thread = threading.Thread(target=supervise, name="engine-supervisor", daemon=True)
    thread.start()
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=api_key, max_retries=0, timeout=120)
    try:
        started = time.monotonic()
        row_a = wait_for(lambda: Engine.objects.filter(model_version=a, state="ready").first(), READY_TIMEOUT,
                         "engine A ready")
        first_start = time.monotonic() - started
        with Load(client) as load:
            wait_for(lambda: len(load.answers) >= 8, 120, "answers from A under load")
            promoted_at = time.monotonic()
            promote(b)
            first_b = wait_for(lambda: next((t for s, t, f in load.answers if f == f"model-version-{b.pk}"), None),
                               READY_TIMEOUT, "an answer from B")
            wait_for(lambda: Engine.objects.get(pk=row_a.pk).state == "stopped", 120, "engine A drained and stopped")
            answers_before_end = len(load.answers)
            wait_for(lambda: len(load.answers) >= answers_before_end + 8, 120, "answers from B alone")
        assert load.failures == [], load.failures[:5]
        fingerprints = [f for _, _, f in load.answers]
        assert f"model-version-{a.pk}" in fingerprints and f"model-version-{b.pk}" in fingerprints
        # Once B answered, every request sent afterwards was answered by B.
        late = {f for s, _, f in load.answers if s > first_b}
        assert late == {f"model-version-{b.pk}"}, late
        assert Engine.objects.get(pk=row_a.pk).error == ""  # drained to zero, not cut off
        assert Engine.objects.filter(model_version=b, state="ready").count() == 1
        print(f"\nfirst engine ready after {first_start:.1f} s; promote -> first answer by the new version "
              f"{first_b - promoted_at:.1f} s; {len(load.answers)} answers, {len(load.failures)} failed")

        # The old version by id: started on demand, answering once ready (and kept: the hang
        # below is checked on it).
        supervisor.idle_seconds = 3600
        with pytest.raises(openai.APIStatusError) as loading:
            client.chat.completions.create(model=str(a.pk), messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=2)
        assert loading.value.status_code == 503 and loading.value.code == "model_loading"
        wait_for(lambda: Engine.objects.filter(model_version=a, state="ready").exists(), READY_TIMEOUT,
                 "engine A started on demand")
        answer = client.chat.completions.create(model=str(a.pk), messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=2, temperature=0)
        assert answer.system_fingerprint == f"model-version-{a.pk}"

        # Its engine core hangs (stopped) while its API server lives on and says "healthy": the
        # supervisor's probe fails it (and would restart it, were it promoted) instead of routing
        # to it forever. (A core that dies takes vLLM's server down within seconds: _reap's case.)
        row_a2 = Engine.objects.get(model_version=a, state="ready")
        proc = supervisor.procs[row_a2.pk]
        core = [pid for pid in proc.memory_rss_mib() if pid != proc.pid]
        assert core, "no engine core process beside the API server"
        for pid in core:
            os.kill(pid, signal.SIGSTOP)
        failed = wait_for(lambda: Engine.objects.filter(pk=row_a2.pk, state="failed").first(), 150,
                          "the engine whose core hung failed")
        assert "stopped answering" in failed.error, failed.error
        assert row_a2.pk not in supervisor.procs and not proc.is_running()
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert not Engine.objects.exclude(state__in=["stopped", "failed"]).exists()
    assert supervisor.procs == {}
