"""OpenAI's error shape for /v1: {"error": {"message", "type", "param", "code"}}.

/v1 answers in this shape instead of the project's /api shape so that OpenAI clients raise their
usual exceptions (AuthenticationError, NotFoundError, RateLimitError, ...) with our message.
"""

from __future__ import annotations

from django.http import JsonResponse

# OpenAI's own `type` values for each status, so clients that branch on them behave the same.
TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


class OpenAIError(Exception):
    """An error to answer with on /v1; `param` names the offending request field."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str | None = None, type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type or TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict:
        from config.errors import public_text  # no server paths in answers

        return {"error": {"message": public_text(self.message), "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def bad_request(message: str, *, param: str | None = None, code: str | None = "invalid_value") -> OpenAIError:
    return OpenAIError(message, status=400, param=param, code=code)


def model_not_found(model: str, why: str = "") -> OpenAIError:
    message = f"The model '{model}' does not exist" + (f": {why}" if why else ".")
    return OpenAIError(message, status=404, param="model", code="model_not_found")
