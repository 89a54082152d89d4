"""Token authentication for the API (its own module: DRF imports it while loading its views)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's, against our hashed tokens (annotate.ApiToken), with
    the user and the token read in one plain query: every annotator request authenticates, and
    composing an ORM query cost more than running it.

    A token fails when unknown, expired, made before the user's last password change, or when
    the user is inactive. Failures are counted per client address (config/throttle.py)."""

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        # Imported here: DRF imports this module while config.errors (which throttle needs) imports DRF.
        from config.throttle import auth_failure_record, auth_failures_check

        auth_failures_check(request)  # an address that keeps failing is refused before the lookup
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            auth_failure_record(request)
            raise

    def authenticate_credentials(self, key):
        from ..models import ApiToken
        from ..services.queue_sql import datetime_out
        from ..services.tokens import token_key_hash, token_matches_password, token_touch

        user_model = get_user_model()
        user = next(iter(user_model.objects.raw(
            f"SELECT u.*, t.id AS token_id, t.password_mark AS token_mark, t.expires_at AS token_expires, "
            f"t.last_used_at AS token_last_used FROM {user_model._meta.db_table} u "
            f"JOIN {ApiToken._meta.db_table} t ON t.user_id = u.id WHERE t.key_hash = %s",
            [token_key_hash(key)])), None)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if datetime_out(user.token_expires) <= now:
            raise exceptions.AuthenticationFailed("This token has expired; sign in again for a new one.")
        if not token_matches_password(user.token_mark, user.password):
            raise exceptions.AuthenticationFailed("This token was revoked by a password change; sign in again.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        last_used = datetime_out(user.token_last_used) if user.token_last_used else None
        token_touch(user.token_id, last_used, now)
        return user, ApiToken(id=user.token_id, user=user, last_used_at=last_used)
