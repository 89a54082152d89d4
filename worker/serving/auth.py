"""Who calls /v1: an API key (Authorization: Bearer ...) or an admin's browser session (the
playground is an admin page), which must then pass Django's CSRF check, as DRF's
SessionAuthentication does for /api."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware

from annotate.roles import is_admin
from config.errors import ApplicationError
from config.throttle import auth_failure_record, auth_failures_check

from ..services.keys import api_key_verify
from .errors import OpenAIError


@dataclass(frozen=True)
class Caller:
    rate_key: str  # what the rate limit counts against
    api_key_id: int | None = None
    user_id: int | None = None


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request, reason):  # the reason instead of an HTML 403 page
        return reason


def _csrf_failure(request: HttpRequest) -> str | None:
    return _CsrfCheck(lambda r: None).process_view(request, None, (), {})


def v1_caller(request: HttpRequest) -> Caller:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise OpenAIError("The Authorization header must be 'Bearer <API key>'.", status=401,
                              code="invalid_api_key")
        try:
            auth_failures_check(request)  # an address that keeps failing is refused before the lookup
            try:
                key = api_key_verify(raw_key=token.strip())
            except ApplicationError:
                auth_failure_record(request)
                raise
        except ApplicationError as exc:
            raise OpenAIError(exc.message, status=exc.status, code=exc.code, headers=exc.headers) from None
        # The hash, not the id: ids can come back after a database reset, hashes do not.
        return Caller(rate_key=f"key:{key.hashed_key[:24]}", api_key_id=key.pk)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active:
        if not is_admin(user):
            raise OpenAIError("Only admins may call the model API from a browser session; scripts use an "
                              "API key.", status=403, code="admin_only")
        reason = _csrf_failure(request)
        if reason:
            raise OpenAIError(f"CSRF check failed: {reason}", status=403, code="csrf_failed")
        return Caller(rate_key=f"user:{user.pk}", user_id=user.pk)
    raise OpenAIError("No API key provided: send 'Authorization: Bearer <API key>' (admins create keys at "
                      "POST /api/keys), or sign in.", status=401, code="missing_api_key")
