"""API keys for the OpenAI-compatible model API. Only a hash is stored; the key is shown once."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class APIKey(models.Model):
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=12, help_text="first characters, to tell keys apart")
    hashed_key = models.CharField(max_length=64, unique=True, help_text="sha256 hex of the key")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
