"""API tokens of the annotation API (`Authorization: Token <key>`). Only a hash of the key is kept."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """One token of one user. The key is shown once, when it is made; revoking deletes the row.

    `password_mark` ties the token to the password the user had when it was made (an HMAC of the
    password hash): after any password change, by the API, the Django admin or manage.py, the
    token no longer authenticates, as Django's sessions do.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="api", help_text="what the token is for")
    key_hash = models.CharField(max_length=64, unique=True, help_text="sha256 hex of the key")
    prefix = models.CharField(max_length=8, help_text="first characters of the key, to tell tokens apart")
    password_mark = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "created_at"], name="api_token_user_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of user {self.user_id}"
