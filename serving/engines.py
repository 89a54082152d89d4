"""Where a /v1 request or a round's generation goes: the engine serving its model version.

Read from the Engine table on every request (one indexed query), so every web process follows the
supervisor's swaps without any signal between processes. An alias ("latest", a project slug)
answers from the newly promoted version once its engine is ready, and from the engine of the
version promoted before it until then: a promotion never leaves the alias without an engine."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from registry.models import ModelVersion

from .engine_choice import EXTERNAL, VLLM, serving_engine
from .errors import OpenAIError
from .models import Engine
from .resolve import ServedModel

TOUCH_EVERY = timedelta(seconds=10)  # last_used_at is coarse: no write per request
FAILED_RECENTLY = timedelta(seconds=60)  # a failed on-demand start is reported, not retried, this long


@dataclass(frozen=True)
class EngineRoute:
    openai_url: str  # http://host:port/v1
    upstream_model: str  # the name to put in "model" for that engine
    served: ServedModel  # the version that answers (for an alias during a swap: the previous one)
    engine_id: int | None = None  # the Engine row, for managed engines


def engine_unavailable(message: str, *, code: str = "engine_unavailable", retry_after: int | None = None) -> OpenAIError:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return OpenAIError(message, status=503, code=code, headers=headers)


def engine_route(served: ServedModel) -> EngineRoute:
    """The engine that answers for `served`; 503 (OpenAI's shape) when none is ready."""
    choice = serving_engine()
    if choice.problem:
        raise engine_unavailable(f"The inference engine ({choice.name}) cannot run: {choice.problem}.")
    if choice.name == EXTERNAL:
        return _external_route(served)
    if choice.name != VLLM:
        raise AssertionError(f"no engine route for the {choice.name} engine")
    row = Engine.objects.filter(state=Engine.State.READY, model_version_id=served.version_id).first()
    if row is None and not served.requested.isdigit():
        row = _alias_fallback(served)
        if row is not None:
            version = row.model_version
            served = dataclasses.replace(served, version_id=version.pk, name=version.name,
                                         path=str(settings.ARTIFACTS_ROOT / version.path))
    if row is None:
        raise _not_ready(served)
    _touch(row)
    return EngineRoute(f"{row.base_url}/v1", row.served_name, served, row.pk)


EXTERNAL_MODELS_TTL = 10.0  # seconds an external engine's answer to "what do you run?" is reused
_external_runs: dict[str, tuple[float, int | None]] = {}  # engine URL -> (when asked, version id or None)


def _external_route(served: ServedModel) -> EngineRoute:
    """An external server runs the one checkpoint its operator started it on; vLLM names it in
    /v1/models ("root": the checkpoint path). A version asked for by id that is not that one is
    refused (404), never answered by another model under its id; an alias answers from the version
    the server does run, and says so. A server that does not name its checkpoint (root missing, or
    not one of ours) is trusted to run what it is asked for."""
    url = settings.RLHF_SERVING_ENGINE_URL.rstrip("/")
    runs = _external_version(url)
    if runs is not None and runs.pk != served.version_id:
        if served.requested.isdigit():
            raise OpenAIError(f"Model version {served.version_id} is not served here: the inference engine at {url} "
                              f"runs model version {runs.pk} ({runs.name}). Ask for \"{runs.pk}\" or an alias, or "
                              "start the engine on this version.", status=404, code="model_not_served", param="model")
        served = dataclasses.replace(served, version_id=runs.pk, name=runs.name,
                                     path=str(settings.ARTIFACTS_ROOT / runs.path))
    return EngineRoute(url, getattr(settings, "RLHF_SERVING_ENGINE_MODEL", "") or served.path, served)


def _external_version(url: str) -> ModelVersion | None:
    """The registry's version whose checkpoint the external server at `url` runs, or None. Asked
    of the server (and matched against the registry) once per EXTERNAL_MODELS_TTL, not per request."""
    now = time.monotonic()
    cached = _external_runs.get(url)
    if cached is None or now - cached[0] > EXTERNAL_MODELS_TTL:
        cached = _external_runs[url] = (now, _match_checkpoint(_external_roots(url)))
    return ModelVersion.objects.filter(pk=cached[1]).first() if cached[1] is not None else None


def _external_roots(url: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=5) as resp:
            models = json.loads(resp.read()).get("data") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [str(m.get("root") or "").rstrip("/") for m in models if isinstance(m, dict) and m.get("root")]


def _match_checkpoint(roots: list[str]) -> int | None:
    """The policy whose directory is one of `roots`: the same path here, else the longest relative
    path a root ends with (the server may mount the artifacts elsewhere)."""
    if not roots:
        return None
    root_dir = str(settings.ARTIFACTS_ROOT).rstrip("/")
    best, best_len = None, -1
    for pk, path in ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).values_list("pk", "path"):
        rel = path.strip("/")
        if any(r == f"{root_dir}/{rel}" for r in roots):
            return pk
        if len(rel) > best_len and any(r.endswith(f"/{rel}") for r in roots):
            best, best_len = pk, len(rel)
    return best


def _alias_fallback(served: ServedModel) -> Engine | None:
    """The ready engine of the alias's project whose version was promoted most recently."""
    if served.project_slug is None:
        return None
    return (Engine.objects.filter(state=Engine.State.READY, model_version__project__slug=served.project_slug,
                                  model_version__kind=ModelVersion.Kind.POLICY)
            .select_related("model_version")
            .order_by(F("model_version__promoted_at").desc(nulls_last=True), "-ready_at").first())


def _not_ready(served: ServedModel) -> OpenAIError:
    version = served.version_id
    rows = Engine.objects.filter(model_version_id=version)
    live = rows.filter(state__in=[Engine.State.REQUESTED, Engine.State.STARTING]).first()
    if live is not None and live.state == Engine.State.STARTING:
        since = int((timezone.now() - (live.started_at or live.created_at)).total_seconds())
        return engine_unavailable(f"The inference engine for model version {version} is starting ({since} s so "
                                  "far); retry in a few seconds.", code="engine_starting", retry_after=5)
    if live is not None:
        return engine_unavailable(f"Model version {version} is waiting for an engine to be started for it; retry "
                                  "in a minute.", code="model_loading", retry_after=30)
    failed = rows.filter(state=Engine.State.FAILED).order_by("-stopped_at").first()
    promoted = ModelVersion.objects.filter(pk=version, promoted=True).exists()
    if failed is not None and (promoted or failed.stopped_at and timezone.now() - failed.stopped_at < FAILED_RECENTLY):
        return engine_unavailable(f"The inference engine for model version {version} failed: {failed.error}",
                                  code="engine_failed", retry_after=30)
    if promoted:
        return engine_unavailable(
            f"No inference engine is serving model version {version}: the engine supervisor (`python manage.py "
            "run_engines`, which `make run` starts) is not running or has not started it yet; see /healthz.",
            retry_after=10)
    # A version that is not promoted is served on demand, within RLHF_SERVING_ENGINE_MAX engines.
    try:
        with transaction.atomic():
            Engine.objects.create(model_version_id=version, state=Engine.State.REQUESTED)
    except IntegrityError:  # another request asked first
        pass
    return engine_unavailable(f"Model version {version} is not loaded in an engine; one is being started for it "
                              "(at most RLHF_SERVING_ENGINE_MAX engines run at once); retry in a minute.",
                              code="model_loading", retry_after=30)


def _touch(row: Engine) -> None:
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        Engine.objects.filter(pk=row.pk).update(last_used_at=now)


def engine_status() -> dict:
    """What /healthz says about the engine: which one, why, and the managed engines' states."""
    choice = serving_engine()
    status: dict = {"ok": not choice.problem, "engine": choice.name, "why": choice.why}
    if choice.problem:
        status["error"] = choice.problem
        return status
    if choice.name != VLLM:
        return status
    from .resolve import latest_version

    engines = [{"id": e.pk, "model_version": e.model_version_id, "state": e.state, "url": e.base_url,
                **({"error": e.error} if e.error else {})}
               for e in Engine.objects.exclude(state__in=[Engine.State.STOPPED]).order_by("id")[:20]]
    status["engines"] = engines
    latest = latest_version()
    if latest is not None:
        served = ServedModel("latest", latest.pk, latest.name, latest.path,
                             latest.project.slug if latest.project_id else None)
        ready = Engine.objects.filter(state=Engine.State.READY, model_version_id=latest.pk).exists() \
            or _alias_fallback(served) is not None
        if not ready:
            status["ok"] = False
            status["error"] = _not_ready_text(latest.pk)
    return status


def _not_ready_text(version: int) -> str:
    row = Engine.objects.filter(model_version_id=version).order_by("-id").first()
    if row is None:
        return (f"no vLLM engine for the promoted model version {version}: is `python manage.py run_engines` "
                "running (make run starts it)?")
    if row.state == Engine.State.FAILED:
        return f"the vLLM engine for model version {version} failed: {row.error}"
    return f"the vLLM engine for model version {version} is {row.state}"
