"""The one application error type and the error answers of every surface.

Services raise ApplicationError; the DRF exception handler turns it, and every DRF error,
into {"error": {"code": ..., "message": ..., "details": ...}} with the right status. The
errors Django answers itself (an unknown URL, a bad Host header, a body over the limit, a CSRF
failure, an unhandled exception) go through `error_response`, which gives /api that same
shape, /v1 OpenAI's, and pages a styled page: never Django's bare HTML.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """A domain rule said no. `code` is stable for clients; `message` is for people."""

    status = 400

    def __init__(self, message: str, *, code: str = "invalid", status: int | None = None,
                 details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.headers = headers or {}
        if status is not None:
            self.status = status


class NotFound(ApplicationError):
    status = 404

    def __init__(self, message: str, *, details: Any = None):
        super().__init__(message, code="not_found", details=details)


class Conflict(ApplicationError):
    status = 409

    def __init__(self, message: str, *, code: str = "conflict", details: Any = None):
        super().__init__(message, code=code, details=details)


def _server_roots() -> list[tuple[str, str]]:
    from pathlib import Path

    roots = [(str(settings.ARTIFACTS_ROOT), "<artifacts>"), (str(settings.DATA_DIR), "<data>"),
             (str(settings.BASE_DIR), "<app>"), (str(Path.home()), "~")]
    return sorted(((r, n) for r, n in roots if len(r) > 1), key=lambda rn: -len(rn[0]))


def public_text(value: Any) -> Any:
    """What an answer may say: the server's own directories (artifacts, data folder, code,
    home) replaced by a placeholder, so that no error tells a client or an annotator where the
    files lie. Applied to every error body of /api and /v1 and to /healthz; the server log
    keeps the full text."""
    if isinstance(value, str):
        for root, name in _server_roots():
            value = value.replace(root, name)
        return value
    if isinstance(value, dict):
        return {k: public_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public_text(v) for v in value]
    return value


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": code, "message": public_text(message), "details": public_text(details)}}


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field in ("non_field_errors", "detail") else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def body_too_large_message() -> str:
    return f"The request body is larger than the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("body_too_large", body_too_large_message()), status=413)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return Response(error_body("too_many_fields", str(exc)), status=400)
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status, headers=exc.headers)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database restarting or unreachable: nothing was stored; the client may try again.
        return Response(error_body("database_unavailable", "the database is unavailable; nothing was saved, "
                                   "try again in a moment"), status=503, headers={"Retry-After": "5"})
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied(str(exc) or None)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        body = error_body("validation_error", _first_message(exc.detail), exc.detail)
    elif isinstance(exc, drf_exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        body = error_body(code, _first_message(exc.detail), None)
    else:  # pragma: no cover - DRF only handles APIException subclasses
        body = error_body("error", str(exc), None)
    response.data = body
    return response


# --- errors Django answers itself --------------------------------------------------------------

log = logging.getLogger(__name__)

TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 413: "Request too large",
          500: "Server error"}


def _surface(request: HttpRequest) -> str:
    path = request.path_info or request.path or ""
    if path.startswith("/api/") or path == "/api":
        return "api"
    if path.startswith("/v1/") or path == "/v1":
        return "v1"
    return "page"


def error_response(request: HttpRequest, *, status: int, code: str, message: str) -> HttpResponse:
    surface = _surface(request)
    if surface == "api":
        return JsonResponse(error_body(code, message), status=status)
    if surface == "v1":
        from worker.serving.errors import OpenAIError

        return OpenAIError(message, status=status, code=code).response()
    from django.shortcuts import render

    context = {"status": status, "title": TITLES.get(status, "Error"), "message": message}
    try:
        return render(request, "frontend/error.html", context, status=status)
    except Exception:  # the page itself failed (e.g. the database is down): a plain one
        log.exception("error page failed to render")
        return HttpResponse(f"<!doctype html><title>{status}</title><h1>{context['title']}</h1>",
                            status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        return error_response(request, status=413, code="body_too_large", message=body_too_large_message())
    return error_response(request, status=400, code="bad_request",
                          message="The request was not understood (a malformed request or an unknown host).")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    message = str(exception or "") or "You may not open this."
    return error_response(request, status=403, code="permission_denied", message=message)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _surface(request) == "page":
        message = "There is no page at this address."
    else:
        message = f"Unknown endpoint {request.method} {request.path}."
    return error_response(request, status=404, code="not_found", message=message)


def server_error(request: HttpRequest) -> HttpResponse:
    # The details are in the server log, never in the answer.
    return error_response(request, status=500, code="internal_error",
                          message="The server had an error while processing this request.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return error_response(request, status=403, code="csrf_failed",
                          message="The form was stale or sent from another site (CSRF check failed); "
                                  "reload the page and try again.")
