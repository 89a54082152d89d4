"""Request bodies of /v1/chat/completions and /v1/completions -> a validated GenerationRequest.

Parameters map onto rlhf.sampling.SamplingConfig: temperature 0 is greedy; top_k (our extension)
selects top-k sampling; top_p < 1 selects nucleus sampling; otherwise plain multinomial sampling
at the given temperature, which is what OpenAI's defaults (temperature 1, top_p 1) mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from .errors import bad_request

ROLES = ("system", "user", "assistant", "developer", "tool")
MAX_STOP = 4  # OpenAI's limit
# Parameters clients send that we cannot honour; silently ignoring them would give wrong answers.
UNSUPPORTED = ("tools", "functions", "logit_bias", "response_format", "suffix", "echo", "best_of", "logprobs",
               "top_logprobs", "audio", "prediction")
# Those the inference engine (vLLM) answers itself when /v1 forwards to it: log-probs come from it.
ENGINE_OPTIONS = ("logprobs", "top_logprobs")


@dataclass
class GenerationRequest:
    model: str
    prompts: list  # raw strings (completions) or one message list (chat)
    chat: bool
    strategy: str
    temperature: float
    top_k: int
    top_p: float
    max_tokens: int | None  # None: the default, cut to what the model's context leaves
    n: int
    seed: int | None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    # vLLM's extensions, answered the same way: the prompt's and the completion's token ids, and
    # (chat) the prompt text the chat template made.
    return_token_ids: bool = False
    return_prompt_text: bool = False

    def sampling_config(self, max_new_tokens: int | None = None) -> Any:
        from rlhf.sampling import SamplingConfig

        return SamplingConfig(strategy=self.strategy, temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p, max_new_tokens=max_new_tokens or self.max_tokens or 1,
                              seed=self.seed, stop=self.stop)


def parse_json_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


def _number(body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{name}' must be a number, got {value!r}.", param=name, code="invalid_type")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise bad_request(f"'{name}' must be in {bracket}{low}, {high}], got {value}.", param=name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer, got {value!r}.", param=name, code="invalid_type")
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_request(f"'{name}' must be {limit}, got {value}.", param=name)
    return value


def _stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of non-empty strings.", param="stop")
    if len(stops) > MAX_STOP:
        raise bad_request(f"'stop' takes at most {MAX_STOP} sequences.", param="stop")
    return stops


def _message_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    # The content-parts form: only text parts can reach a text model.
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise bad_request(f"messages[{index}].content must be a string or a list of text parts.",
                      param=f"messages[{index}].content")


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects.", param="messages",
                          code="missing_required_parameter" if messages is None else "invalid_value")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_request(f"messages[{i}].role must be one of {', '.join(ROLES)}.", param=f"messages[{i}].role")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": _message_text(m.get("content"), i)})
    return out


def _prompts(body: dict) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise bad_request("'prompt' must be a string or a non-empty list of strings (token arrays are "
                          "not supported).", param="prompt",
                          code="missing_required_parameter" if prompt is None else "invalid_value")
    return prompts


def generation_request_parse(body: dict, *, chat: bool, engine_options: bool = False) -> GenerationRequest:
    """Validate a request body; every problem is a 400 naming the parameter. engine_options: the
    request goes to the inference engine, which also answers ENGINE_OPTIONS."""
    for name in UNSUPPORTED:
        if engine_options and name in ENGINE_OPTIONS:
            continue
        value = body.get(name)
        if value not in (None, False, 0, [], {}) and not (name == "best_of" and value == 1):
            raise bad_request(f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter")
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise bad_request(f"'{name}' is not supported by this server; leave it at 0.", param=name,
                              code="unsupported_parameter")
    max_cap = getattr(settings, "RLHF_SERVING_MAX_TOKENS", 2048)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    top_k = _integer(body, "top_k", 0, 0)
    max_tokens = _integer(body, "max_completion_tokens", None, 1, max_cap)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", None, 1, max_cap)
    n = _integer(body, "n", 1, 1, getattr(settings, "RLHF_SERVING_MAX_N", 16))
    seed = _integer(body, "seed", None, -(2**63), 2**63 - 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream", code="invalid_type")
    flags = {name: body.get(name) or False for name in ("return_token_ids", "return_prompt_text")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise bad_request(f"'{name}' must be a boolean.", param=name, code="invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options", code="invalid_type")
    if temperature == 0.0:
        strategy = "greedy"
    elif top_k and top_p < 1.0:
        raise bad_request("Give either top_k or top_p, not both: the sampler applies one filter.", param="top_k")
    elif top_k:
        strategy = "top_k"
    elif top_p < 1.0:
        strategy = "top_p"
    else:
        strategy = "multinomial"
    prompts = [_messages(body)] if chat else _prompts(body)
    request = GenerationRequest(
        model=body.get("model"), prompts=prompts, chat=chat, strategy=strategy,
        temperature=temperature if temperature > 0 else 1.0, top_k=top_k or 50, top_p=top_p,
        max_tokens=max_tokens, n=n, seed=seed, stop=_stop(body), stream=stream,
        include_usage=bool(options.get("include_usage")), **flags,
    )
    choices, cap = len(prompts) * n, getattr(settings, "RLHF_SERVING_MAX_CHOICES", 16)
    if choices > cap:
        raise bad_request(f"This request asks for {choices} completions ({len(prompts)} prompts x n={n}); at most "
                          f"{cap} are answered per request (RLHF_SERVING_MAX_CHOICES).",
                          param="n" if n > 1 else "prompt", code="too_many_completions")
    if stream and (n > 1 or len(prompts) > 1):
        raise bad_request("Streaming answers one prompt with n=1.", param="n" if n > 1 else "prompt")
    try:
        request.sampling_config().validate()
    except ValueError as exc:  # the sampler's own rules, which name the field
        raise bad_request(str(exc)) from None
    return request
