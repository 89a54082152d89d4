"""The /v1 paths in the API schema (/api/schema, /api/docs). /v1 is plain Django views answering
in OpenAI's shape, which drf-spectacular cannot see, so a postprocessing hook adds them here,
described from what params.py accepts."""

from __future__ import annotations

NUMBER = {"type": "number", "nullable": True}
INTEGER = {"type": "integer", "nullable": True}

SAMPLING = {
    "model": {"type": "string", "description": "'latest', a project slug, or a model version id"},
    "temperature": {**NUMBER, "minimum": 0, "maximum": 2, "description": "0 = greedy"},
    "top_p": {**NUMBER, "minimum": 0, "maximum": 1, "description": "below 1 = nucleus sampling"},
    "top_k": {**INTEGER, "minimum": 0, "description": "top-k sampling (an extension of OpenAI's API)"},
    "max_tokens": {**INTEGER, "minimum": 1, "description": "capped by RLHF_SERVING_MAX_TOKENS"},
    "max_completion_tokens": {**INTEGER, "minimum": 1},
    "n": {**INTEGER, "minimum": 1, "description": "capped by RLHF_SERVING_MAX_N"},
    "seed": INTEGER,
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}],
             "nullable": True},
    "stream": {"type": "boolean", "default": False, "description": "server-sent events, one prompt, n=1"},
    "stream_options": {"type": "object", "nullable": True,
                       "properties": {"include_usage": {"type": "boolean"}}},
    "return_token_ids": {"type": "boolean", "default": False, "description": (
        "vLLM's extension: the answer carries prompt_token_ids (chat: at the top, in a stream's first "
        "chunk; completions: in each choice) and choices[i].token_ids (in a stream: each chunk's own ids)")},
}
RETURN_PROMPT_TEXT = {"type": "boolean", "default": False, "description": (
    "vLLM's extension: the answer (a stream's first chunk) carries prompt_text, the prompt as the chat "
    "template made it")}

ERROR = {
    "type": "object",
    "description": "OpenAI's error shape, so that OpenAI clients raise their usual exceptions",
    "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}}}},
}

MESSAGE = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}}}


def _errors(*statuses: int) -> dict:
    names = {400: "invalid request", 401: "no or a wrong API key", 404: "unknown model", 413: "body too large",
             429: "rate limit (RLHF_API_RATE_LIMIT) or too many failed keys", 503: "model unavailable"}
    return {str(s): {"description": names[s], "content": {"application/json": {"schema": ERROR}}} for s in statuses}


def _post(summary: str, properties: dict, required: list[str], answer: str) -> dict:
    return {"post": {
        "operationId": summary.lower().replace(" ", "_"), "summary": summary, "tags": ["v1"],
        "security": [{"ApiKeyBearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": required, "properties": properties}}}},
        "responses": {"200": {"description": answer, "content": {
            "application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {"type": "string"}}}},
            **_errors(400, 401, 404, 413, 429, 503)},
    }}


def v1_paths() -> dict:
    return {
        "/v1/models": {"get": {"operationId": "v1_models_list", "summary": "Served models", "tags": ["v1"],
                               "security": [{"ApiKeyBearer": []}],
                               "responses": {"200": {"description": "{object: list, data: [model]}",
                                                     "content": {"application/json": {"schema": {"type": "object"}}}},
                                             **_errors(401, 429)}}},
        "/v1/models/{model}": {"get": {"operationId": "v1_model", "summary": "One served model", "tags": ["v1"],
                                       "security": [{"ApiKeyBearer": []}],
                                       "parameters": [{"name": "model", "in": "path", "required": True,
                                                       "schema": {"type": "string"}}],
                                       "responses": {"200": {"description": "a model object",
                                                             "content": {"application/json": {
                                                                 "schema": {"type": "object"}}}},
                                                     **_errors(401, 404, 429)}}},
        "/v1/chat/completions": _post("Chat completion", {**SAMPLING, "messages": {"type": "array", "items": MESSAGE},
                                                         "return_prompt_text": RETURN_PROMPT_TEXT},
                                      ["model", "messages"], "a chat.completion, or its chunks when streaming"),
        "/v1/completions": _post("Completion", {**SAMPLING, "prompt": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
            ["model", "prompt"], "a text_completion, or its chunks when streaming"),
    }


def add_v1_paths(result: dict, generator, request, public) -> dict:
    result.setdefault("paths", {}).update(v1_paths())
    schemes = result.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["ApiKeyBearer"] = {"type": "http", "scheme": "bearer",
                               "description": "an API key made at POST /api/keys (admins)"}
    return result
