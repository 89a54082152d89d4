"""The one application error type and the one API error shape.

Services raise ApplicationError; the DRF exception handler turns it, and every DRF error,
into {"error": {"code": ..., "message": ..., "details": ...}} with the right status.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """A domain rule said no. `code` is stable for clients; `message` is for people."""

    status = 400

    def __init__(self, message: str, *, code: str = "invalid", status: int | None = None,
                 details: Any = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
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


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field in ("non_field_errors", "detail") else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
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
