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
from .engine import LoadedModel, StreamDelta, StreamEnd, loaded_model_get
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
                             greedy_copies=params.n if params.strategy == "greedy" else 1,
                             client=request.META.get("gunicorn.socket"))
    loaded = loaded_model_get(served)
    config = params.sampling_config(loaded.max_new_tokens(params))
    answer = _Answer(served, chat, _prompt_extras(params, loaded), params.return_token_ids)
    if params.stream:
        events = answer.stream_events(loaded.stream(params.prompts[0], config), params.include_usage)
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
        return response
    generations = loaded.generate(params.prompts, config, params.n)
    return JsonResponse(answer.body(params, generations))


def _prompt_extras(params: GenerationRequest, loaded: LoadedModel) -> list[dict]:
    """Per prompt, what vLLM adds when asked: prompt_token_ids (return_token_ids) and, for chat,
    prompt_text (return_prompt_text), the text the chat template made."""
    extras = []
    for prompt in params.prompts:
        extra = {}
        if params.return_token_ids:
            extra["prompt_token_ids"] = loaded.prompt_ids(prompt)
        if params.return_prompt_text and params.chat:
            extra["prompt_text"] = loaded.prompt_text(prompt)
        extras.append(extra)
    return extras


class _Answer:
    """The shapes of one answer: a whole completion, or its server-sent chunks. Token ids and the
    prompt's extras sit where vLLM puts them: chat has them at the top (streams: in the first
    chunk), completions in each choice; every chunk carries the ids of its own delta."""

    def __init__(self, served: ServedModel, chat: bool, extras: list[dict], token_ids: bool):
        self.served, self.chat, self.extras, self.token_ids = served, chat, extras, token_ids
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
                ids = {"token_ids": g.token_ids} if self.token_ids else {}
                if self.chat:
                    choices.append({"index": index, "message": {"role": "assistant", "content": g.text},
                                    "logprobs": None, "finish_reason": g.finish_reason, **ids})
                else:
                    choices.append({"index": index, "text": g.text, "logprobs": None,
                                    "finish_reason": g.finish_reason, **self.extras[p], **ids})
        # The prompt is counted once per prompt, however many completions it got (OpenAI's rule).
        prompt_tokens = sum(per_prompt[0].prompt_tokens for per_prompt in generations)
        completion_tokens = sum(g.completion_tokens for per_prompt in generations for g in per_prompt)
        top = self.extras[0] if self.chat else {}
        return {**self._envelope("chat.completion" if self.chat else "text_completion"), "choices": choices,
                "usage": _usage(prompt_tokens, completion_tokens), **top}

    def _chunk(self, delta: str | None, finish_reason: str | None = None, *, first: bool = False,
               token_ids: list[int] | None = None) -> dict:
        ids = {"token_ids": token_ids} if self.token_ids and token_ids is not None else {}
        if self.chat:
            message = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": message, "logprobs": None, "finish_reason": finish_reason, **ids}
            return {**self._envelope("chat.completion.chunk"), "choices": [choice], **(self.extras[0] if first else {})}
        choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish_reason,
                  **(self.extras[0] if first else {}), **ids}
        return {**self._envelope("text_completion"), "choices": [choice]}

    def stream_events(self, items: Generator[StreamDelta | StreamEnd], include_usage: bool) -> Iterator[str]:
        try:
            first = True  # the first chunk carries the prompt's extras
            if self.chat:
                yield _event(self._chunk(None, first=True))
                first = False
            for item in items:
                if isinstance(item, StreamEnd):
                    yield _event(self._chunk(None, item.finish_reason, first=first, token_ids=item.token_ids))
                    if include_usage:
                        usage = _usage(item.prompt_tokens, item.completion_tokens)
                        yield _event({**self._envelope(
                            "chat.completion.chunk" if self.chat else "text_completion"),
                            "choices": [], "usage": usage})
                elif item.text or (self.token_ids and item.token_ids):
                    yield _event(self._chunk(item.text, first=first, token_ids=item.token_ids))
                    first = False
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

