"""/v1: the OpenAI-compatible endpoints as plain Django views, so every answer, errors included,
has OpenAI's shape rather than the /api one."""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterator

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from config.errors import ApplicationError, body_too_large_message

from .auth import v1_caller
from .engine import StreamEnd, loaded_model_get
from .engine_choice import TRANSFORMERS, serving_engine
from .engines import engine_route
from .errors import OpenAIError
from .params import GenerationRequest, generation_request_parse, parse_json_body
from .proxy import proxy_forward
from .ratelimit import rate_limit_hit
from .resolve import ServedModel, served_model_list, served_model_resolve

log = logging.getLogger(__name__)


def openai_endpoint(*methods: str) -> Callable:
    """Method check, caller auth, rate limit, and OpenAI-shaped errors around a /v1 view.

    csrf_exempt because API-key clients send no CSRF token; session callers are checked in v1_caller.
    """

    def wrap(view: Callable) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def handler(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise OpenAIError(f"Method {request.method} is not allowed here; use {' or '.join(methods)}.",
                                      status=405, code="method_not_allowed", headers={"Allow": ", ".join(methods)})
                request.v1_caller = v1_caller(request)  # the views read it: one key check a request
                rate_limit_hit(rate_key=request.v1_caller.rate_key)
                return view(request, *args, **kwargs)
            except OpenAIError as exc:
                return exc.response()
            except RequestDataTooBig:
                return OpenAIError(body_too_large_message(), status=413, code="body_too_large").response()
            except ApplicationError as exc:
                return OpenAIError(exc.message, status=exc.status, code=exc.code, headers=exc.headers).response()
            except Exception:
                log.exception("model API request failed")
                return OpenAIError("The server had an error while processing your request.", status=500,
                                   code="internal_error").response()

        return handler

    return wrap


@openai_endpoint("GET")
def models_list(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"object": "list", "data": served_model_list()})


@openai_endpoint("GET")
def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    served = served_model_resolve(model=model)
    match = [m for m in served_model_list() if m["id"] == model]
    return JsonResponse(match[0] if match else {"id": model, "object": "model", "created": 0,
                                                "owned_by": served.project_slug or "rlhf-service"})


@openai_endpoint("POST")
def chat_completions(request: HttpRequest) -> HttpResponse:
    return _complete(request, chat=True)


@openai_endpoint("POST")
def completions(request: HttpRequest) -> HttpResponse:
    return _complete(request, chat=False)


@openai_endpoint("GET", "POST", "PUT", "PATCH", "DELETE")
def unknown_endpoint(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise OpenAIError(f"Unknown endpoint {request.method} {request.path}.", status=404, code="unknown_url")


def _complete(request: HttpRequest, *, chat: bool) -> HttpResponse:
    body = parse_json_body(request.body)
    forwarded = serving_engine().name != TRANSFORMERS
    params = generation_request_parse(body, chat=chat, engine_options=forwarded)
    # The wrapper counted the request once; each further completion it asks for counts too.
    rate_limit_hit(rate_key=request.v1_caller.rate_key, units=len(params.prompts) * params.n - 1)
    served = served_model_resolve(model=params.model)
    if forwarded:
        return proxy_forward(endpoint="chat/completions" if chat else "completions", body=body,
                             route_for=lambda: engine_route(served),
                             greedy_copies=params.n if params.strategy == "greedy" else 1)
    loaded = loaded_model_get(served)
    config = params.sampling_config(loaded.max_new_tokens(params))
    answer = _Answer(served, chat)
    if params.stream:
        events = answer.stream_events(loaded.stream(params.prompts[0], config), params.include_usage)
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
        return response
    generations = loaded.generate(params.prompts, config, params.n)
    return JsonResponse(answer.body(params, generations))


class _Answer:
    """The shapes of one answer: a whole completion, or its server-sent chunks."""

    def __init__(self, served: ServedModel, chat: bool):
        self.served, self.chat = served, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _envelope(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.served.requested,
                "system_fingerprint": self.served.fingerprint}

    def body(self, params: GenerationRequest, generations: list) -> dict:
        choices = []
        for p, per_prompt in enumerate(generations):
            for j, g in enumerate(per_prompt):
                index = p * params.n + j
                if self.chat:
                    choices.append({"index": index, "message": {"role": "assistant", "content": g.text},
                                    "logprobs": None, "finish_reason": g.finish_reason})
                else:
                    choices.append({"index": index, "text": g.text, "logprobs": None,
                                    "finish_reason": g.finish_reason})
        # The prompt is counted once per prompt, however many completions it got (OpenAI's rule).
        prompt_tokens = sum(per_prompt[0].prompt_tokens for per_prompt in generations)
        completion_tokens = sum(g.completion_tokens for per_prompt in generations for g in per_prompt)
        return {**self._envelope("chat.completion" if self.chat else "text_completion"), "choices": choices,
                "usage": _usage(prompt_tokens, completion_tokens)}

    def _chunk(self, delta: str | None, finish_reason: str | None = None, *, first: bool = False) -> dict:
        if self.chat:
            message = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": message, "logprobs": None, "finish_reason": finish_reason}
            return {**self._envelope("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope("text_completion"), "choices": [choice]}

    def stream_events(self, items: Generator[str | StreamEnd], include_usage: bool) -> Iterator[str]:
        try:
            if self.chat:
                yield _event(self._chunk(None, first=True))
            for item in items:
                if isinstance(item, StreamEnd):
                    yield _event(self._chunk(None, item.finish_reason))
                    if include_usage:
                        usage = _usage(item.prompt_tokens, item.completion_tokens)
                        yield _event({**self._envelope(
                            "chat.completion.chunk" if self.chat else "text_completion"),
                            "choices": [], "usage": usage})
                elif item:
                    yield _event(self._chunk(item))
        except Exception:  # headers are gone: report in the stream, as OpenAI does
            log.exception("model API stream failed")
            yield _event(OpenAIError("The server had an error while generating.", status=500,
                                     code="internal_error").body())
        finally:
            items.close()  # a client that went away stops the decode now, not at garbage collection
        yield "data: [DONE]\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

