"""Token authentication for the API (its own module: DRF imports it while loading its views)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's, with the user read in one plain query: every
    annotator request authenticates, and composing DRF's select_related query cost more than
    running it."""

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
        token_model = self.get_model()
        user_model = get_user_model()
        user = next(iter(user_model.objects.raw(
            f"SELECT u.* FROM {user_model._meta.db_table} u JOIN {token_model._meta.db_table} t "
            "ON t.user_id = u.id WHERE t.key = %s", [key])), None)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, token_model(key=key, user=user)
