"""The engine supervisor: keeps one vLLM process per served model version, as the database says.

Run by `python manage.py run_engines` (which `make run` starts beside gunicorn and the worker).
Each tick it reconciles the Engine table with the registry:
- every promoted policy gets an engine (start: a row in "starting", then "ready" once it answers);
- a version asked for by id (a "requested" row, written by /v1) gets one while the budget allows;
- a promoted version's engine replaces its predecessor blue/green: the old engine keeps answering
  the project's alias until the new one is ready (serving.engines routes so), then it is no longer
  routed to, finishes what it has ("draining": vLLM's running + waiting gauges reach zero) and stops;
- a version that is not promoted stops after RLHF_SERVING_ENGINE_IDLE_SECONDS without requests,
  or when its room is needed for a promoted one (RLHF_SERVING_ENGINE_MAX engines at once).
The web processes only read the table; this process alone starts and stops engines.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from enginectl.engine_process import EngineConfig, EngineError, EngineProcess
from registry.models import ModelVersion

from .models import Engine

log = logging.getLogger(__name__)

DRAIN_GRACE_S = 2.0  # a request routed just before the switch reaches the old engine within this
START_TIMEOUT_S = 900.0
CRASH_LIMIT = 3  # failed starts of one version within CRASH_WINDOW before it is no longer retried
CRASH_WINDOW = timedelta(minutes=10)
# A ready engine is probed every PROBE_EVERY_S (EngineProcess.alive, off the tick thread): vLLM's
# server exits a few seconds after its engine core dies (then _reap sees it), but a hung core (a
# stopped or deadlocked process) leaves a server that says "healthy" while no request ever
# answers. PROBE_FAILURES failed probes in a row fail the engine (a promoted one is restarted).
PROBE_EVERY_S = 10.0
PROBE_TIMEOUT_S = 20.0
PROBE_FAILURES = 2


def engine_config_for(version: ModelVersion, *, served_name: str, log_path: Path) -> EngineConfig:
    """The vLLM command line of a managed engine, from the RLHF_SERVING_ENGINE_* settings. A LoRA
    policy (an adapter directory) runs as its base model with the adapter under `served_name`."""
    path = settings.ARTIFACTS_ROOT / version.path
    # vLLM's neutral defaults, not the checkpoint's generation_config.json: a parameter the client
    # leaves out means what it means on the transformers engine (OpenAI's defaults), and an
    # answer without max_tokens is cut at the same default length.
    extra = ["--generation-config", "vllm", "--override-generation-config",
             f'{{"max_new_tokens": {default_max_tokens()}}}']
    model, name, lora = path, served_name, {}
    adapter = path / "adapter_config.json"
    if adapter.is_file() and not (path / "config.json").is_file():
        import json

        spec = json.loads(adapter.read_text())
        base = Path(spec["base_model_name_or_path"])
        model = base if base.is_absolute() else settings.ARTIFACTS_ROOT / base
        name = f"{served_name}-base"  # requests name the adapter; readiness checks the base
        lora = {"enable_lora": True, "max_lora_rank": max(16, int(spec.get("r", 16)))}
        extra += ["--lora-modules", f"{served_name}={path}"]
    return EngineConfig(
        model=model, served_model_name=name, max_model_len=settings.RLHF_SERVING_ENGINE_MAX_MODEL_LEN,
        dtype=settings.RLHF_SERVING_ENGINE_DTYPE, kv_cache_space_gib=settings.RLHF_SERVING_ENGINE_KV_GIB,
        log_path=log_path, extra_args=extra, **lora)


def default_max_tokens() -> int:
    from .engine import DEFAULT_MAX_TOKENS

    return DEFAULT_MAX_TOKENS


class EngineSupervisor:
    def __init__(self, *, config_for: Callable[..., EngineConfig] = engine_config_for, tick_seconds: float = 1.0,
                 max_engines: int | None = None, drain_seconds: float | None = None,
                 idle_seconds: float | None = None, start_timeout: float = START_TIMEOUT_S,
                 log_dir: Path | None = None):
        self.config_for = config_for
        self.tick_seconds = tick_seconds
        self.max_engines = max_engines or settings.RLHF_SERVING_ENGINE_MAX
        self.drain_seconds = settings.RLHF_SERVING_ENGINE_DRAIN_SECONDS if drain_seconds is None else drain_seconds
        self.idle_seconds = settings.RLHF_SERVING_ENGINE_IDLE_SECONDS if idle_seconds is None else idle_seconds
        self.start_timeout = start_timeout
        self.log_dir = log_dir or settings.DATA_DIR / "logs"
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.procs: dict[int, EngineProcess] = {}  # Engine row id -> its process
        self._drain_started: dict[int, float] = {}
        self._blocked_logged: set[int] = set()
        self._probes: dict[int, tuple[float, Future]] = {}  # Engine row id -> (when, its running probe)
        self._misses: dict[int, int] = {}  # Engine row id -> failed probes in a row
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="engine-probe")

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Tick until `stop` is set, then stop every engine. Engines get SIGTERM if the thread
        that started them exits (enginectl), so call this from a long-lived thread."""
        self.recover()
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # a database blip must not take the engines down
                    log.exception("engine supervisor tick failed")
                    close_old_connections()
                stop.wait(self.tick_seconds)
        finally:
            self.shutdown()

    def recover(self) -> None:
        """Rows left live by an earlier supervisor on this host: their engines died with it."""
        host = socket.gethostname()
        stale = Engine.objects.filter(supervisor__startswith=f"{host}:",
                                      state__in=[Engine.State.STARTING, Engine.State.READY, Engine.State.DRAINING])
        stale.exclude(supervisor=self.name).update(state=Engine.State.STOPPED, stopped_at=timezone.now(),
                                                   error="its supervisor stopped")

    def tick(self) -> None:
        self._reap()
        self._check_starting()
        self._start_wanted()
        self._retire()
        self._drain()
        self._probe()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for row_id, proc in list(self.procs.items()):
            proc.stop()
            Engine.objects.filter(pk=row_id).update(state=Engine.State.STOPPED, stopped_at=timezone.now(), pid=None)
        self.procs.clear()

    # ---- steps -------------------------------------------------------------------------------

    def _mine(self, *states: str):
        return Engine.objects.filter(pk__in=list(self.procs), state__in=states)

    def _reap(self) -> None:
        """Engines that exited on their own: failed, with the end of their log."""
        for row in self._mine(Engine.State.STARTING, Engine.State.READY, Engine.State.DRAINING):
            proc = self.procs[row.pk]
            if proc.is_running():
                continue
            code = proc.proc.returncode if proc.proc else None
            error = f"the engine exited with code {code}; last log lines: {proc.log_tail(8).strip()[-1500:]}"
            state = Engine.State.STOPPED if row.state == Engine.State.DRAINING else Engine.State.FAILED
            log.error("engine %s (model version %s) %s", row.pk, row.model_version_id, error)
            Engine.objects.filter(pk=row.pk).update(state=state, stopped_at=timezone.now(), pid=None, error=error)
            del self.procs[row.pk]

    def _probe(self) -> None:
        """Ready engines that stopped making progress (see PROBE_EVERY_S) are failed and stopped."""
        now = time.monotonic()
        for row in self._mine(Engine.State.READY):
            when, future = self._probes.get(row.pk, (0.0, None))
            if future is not None and not future.done():
                continue
            if future is not None:
                self._probes[row.pk] = (when, None)
                try:
                    why = future.result()
                except Exception:  # a probe's own failure says nothing of the engine
                    log.exception("engine %s probe raised", row.pk)
                    why = None
                if why is None:
                    self._misses.pop(row.pk, None)
                else:
                    self._misses[row.pk] = self._misses.get(row.pk, 0) + 1
                    log.warning("engine %s (model version %s) probe failed (%s in a row): %s", row.pk,
                                row.model_version_id, self._misses[row.pk], why)
                    if self._misses[row.pk] >= PROBE_FAILURES:
                        self._fail_unresponsive(row, why)
                        continue
            if now - when >= PROBE_EVERY_S:
                self._probes[row.pk] = (now, self._pool.submit(self.procs[row.pk].alive, PROBE_TIMEOUT_S))

    def _fail_unresponsive(self, row: Engine, why: str) -> None:
        proc = self.procs.pop(row.pk)
        tail = proc.log_tail(8).strip()[-1500:]
        error = f"stopped answering ({PROBE_FAILURES} probes in a row; last: {why}); last log lines: {tail}"
        log.error("engine %s (model version %s) %s", row.pk, row.model_version_id, error)
        proc.kill()
        self._misses.pop(row.pk, None)
        self._probes.pop(row.pk, None)
        Engine.objects.filter(pk=row.pk).update(state=Engine.State.FAILED, stopped_at=timezone.now(), pid=None,
                                                error=error)

    def _check_starting(self) -> None:
        for row in self._mine(Engine.State.STARTING):
            proc = self.procs[row.pk]
            if proc.answers():
                Engine.objects.filter(pk=row.pk).update(state=Engine.State.READY, ready_at=timezone.now())
                log.info("engine %s ready for model version %s at %s after %.0f s", row.pk, row.model_version_id,
                         proc.base_url, time.monotonic() - (proc.started_at or time.monotonic()))
            elif time.monotonic() - (proc.started_at or 0) > self.start_timeout:
                tail = proc.log_tail(8).strip()[-1500:]
                proc.stop()
                del self.procs[row.pk]
                Engine.objects.filter(pk=row.pk).update(
                    state=Engine.State.FAILED, stopped_at=timezone.now(), pid=None,
                    error=f"not ready after {self.start_timeout:.0f} s; last log lines: {tail}")

    def _start_wanted(self) -> None:
        promoted = list(ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, promoted=True,
                                                    project__isnull=False, archived_at__isnull=True)
                        .order_by(F("promoted_at").desc(nulls_last=True)))
        live = set(Engine.objects.filter(state__in=[Engine.State.STARTING, Engine.State.READY])
                   .values_list("model_version_id", flat=True))
        for version in promoted:
            if version.pk not in live and not self._crash_looping(version):
                if self._room(for_promoted=True):
                    self._start(version)
                elif version.pk not in self._blocked_logged:
                    self._blocked_logged.add(version.pk)
                    log.warning("no room for an engine for promoted model version %s yet (RLHF_SERVING_ENGINE_MAX="
                                "%s); waiting for one to drain", version.pk, self.max_engines)
        for row in Engine.objects.filter(state=Engine.State.REQUESTED).select_related("model_version"):
            if self._room(for_promoted=False):
                self._start(row.model_version, row=row)
            else:
                Engine.objects.filter(pk=row.pk).update(
                    state=Engine.State.FAILED, stopped_at=timezone.now(),
                    error=f"no room: {len(self.procs)} engines run already (RLHF_SERVING_ENGINE_MAX="
                          f"{self.max_engines}); raise it, or promote this version")

    def _crash_looping(self, version: ModelVersion) -> bool:
        recent = Engine.objects.filter(model_version=version, state=Engine.State.FAILED,
                                       stopped_at__gte=timezone.now() - CRASH_WINDOW).count()
        return recent >= CRASH_LIMIT

    def _room(self, *, for_promoted: bool) -> bool:
        """A process slot free now; for a promoted version, an idle on-demand engine is made to
        give its slot up (it drains first, so the new one starts on a later tick)."""
        if len(self.procs) < self.max_engines:
            return True
        if for_promoted and not self._mine(Engine.State.DRAINING).exists():
            victim = (self._mine(Engine.State.READY).filter(model_version__promoted=False)
                      .order_by(F("last_used_at").asc(nulls_first=True)).first())
            if victim is not None:
                self._set_draining(victim, "its room is needed for a promoted version")
        return False

    def _start(self, version: ModelVersion, row: Engine | None = None) -> None:
        now = timezone.now()
        try:
            with transaction.atomic():
                if row is None:
                    row = Engine.objects.create(model_version=version, state=Engine.State.STARTING,
                                                supervisor=self.name, started_at=now)
                else:
                    Engine.objects.filter(pk=row.pk).update(state=Engine.State.STARTING, supervisor=self.name,
                                                            started_at=now)
        except IntegrityError:  # a request row for this version appeared meanwhile; next tick takes it
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        served_name = f"mv-{version.pk}"
        config = self.config_for(version, served_name=served_name, log_path=self.log_dir / f"engine-{row.pk}.log")
        proc = EngineProcess(config)
        try:
            proc.start()
        except (EngineError, OSError) as exc:
            Engine.objects.filter(pk=row.pk).update(state=Engine.State.FAILED, stopped_at=timezone.now(),
                                                    error=str(exc))
            log.error("engine for model version %s did not start: %s", version.pk, exc)
            return
        self.procs[row.pk] = proc
        self._blocked_logged.discard(version.pk)
        Engine.objects.filter(pk=row.pk).update(served_name=served_name, base_url=proc.base_url, pid=proc.pid,
                                                log_path=str(proc.log_path))
        log.info("engine %s starting for model version %s (%s) at %s, log %s", row.pk, version.pk, version.name,
                 proc.base_url, proc.log_path)

    def _retire(self) -> None:
        """Ready engines of versions no longer promoted: drain once their project's promoted
        version answers (the alias then routes there) and no one asked for them a while."""
        now = timezone.now()
        for row in self._mine(Engine.State.READY).filter(model_version__promoted=False).select_related("model_version"):
            version = row.model_version
            successor_ready = Engine.objects.filter(
                state=Engine.State.READY, model_version__project_id=version.project_id,
                model_version__promoted=True).exists() if version.project_id else True
            if not successor_ready:
                continue  # still the project's alias fallback
            last = max(t for t in (row.last_used_at, row.ready_at, row.started_at, row.created_at) if t)
            if (now - last).total_seconds() >= self.idle_seconds:
                self._set_draining(row, f"not promoted and unused for {self.idle_seconds:.0f} s")

    def _set_draining(self, row: Engine, why: str) -> None:
        Engine.objects.filter(pk=row.pk, state=Engine.State.READY).update(state=Engine.State.DRAINING)
        self._drain_started[row.pk] = time.monotonic()
        log.info("engine %s (model version %s) draining: %s", row.pk, row.model_version_id, why)

    def _drain(self) -> None:
        for row in self._mine(Engine.State.DRAINING):
            proc = self.procs[row.pk]
            since = time.monotonic() - self._drain_started.setdefault(row.pk, time.monotonic())
            if since < DRAIN_GRACE_S:
                continue
            in_flight = proc.requests_in_flight()
            if in_flight and since < self.drain_seconds:
                continue
            proc.stop()
            del self.procs[row.pk]
            self._drain_started.pop(row.pk, None)
            Engine.objects.filter(pk=row.pk).update(
                state=Engine.State.STOPPED, stopped_at=timezone.now(), pid=None,
                error="" if not in_flight else f"stopped after draining {since:.0f} s with {in_flight} requests left")
            log.info("engine %s (model version %s) stopped after draining %.1f s", row.pk, row.model_version_id, since)


