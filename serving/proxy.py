"""Forwarding /v1 generation requests to an external OpenAI-compatible engine (vLLM) when
RLHF_SERVING_ENGINE_URL is set, streaming included. Keys, rate limit and model names stay ours:
the engine sees the promoted checkpoint's path as the model name (what `vllm serve <path>` serves
under), or RLHF_SERVING_ENGINE_MODEL when the engine was started with another name."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

from .errors import OpenAIError
from .resolve import ServedModel

TIMEOUT_SECONDS = 600


def engine_url() -> str:
    return (getattr(settings, "RLHF_SERVING_ENGINE_URL", "") or "").rstrip("/")


def proxy_forward(*, endpoint: str, body: dict, served: ServedModel) -> HttpResponse:
    """POST body to {engine}/{endpoint}; the answer goes back as is, except the model name."""
    upstream_model = getattr(settings, "RLHF_SERVING_ENGINE_MODEL", "") or served.path
    payload = json.dumps({**body, "model": upstream_model}).encode()
    headers = {"Content-Type": "application/json"}
    engine_key = getattr(settings, "RLHF_SERVING_ENGINE_API_KEY", "")
    if engine_key:
        headers["Authorization"] = f"Bearer {engine_key}"
    request = urllib.request.Request(f"{engine_url()}/{endpoint}", data=payload, headers=headers, method="POST")
    try:
        upstream = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:  # the engine's own error answer: pass it on
        return HttpResponse(exc.read(), status=exc.code, content_type=exc.headers.get("Content-Type", "application/json"))
    except OSError as exc:
        raise OpenAIError(f"The model engine at {engine_url()} is unreachable: {exc}", status=502,
                          code="engine_unreachable") from None
    if body.get("stream"):
        response = StreamingHttpResponse(_lines(upstream), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    with upstream:
        answer = json.loads(upstream.read())
    if isinstance(answer, dict) and "model" in answer:
        answer["model"] = served.requested
        answer.setdefault("system_fingerprint", served.fingerprint)
    return HttpResponse(json.dumps(answer), content_type="application/json")


def _lines(upstream) -> Iterator[bytes]:
    # Line by line, so every server-sent event goes out as soon as the engine sends it.
    with upstream:
        yield from upstream
