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


class Engine(models.Model):
    """One inference engine process (vLLM) that serves one model version, as the engine supervisor
    (`manage.py run_engines`) started it. /v1 and round generation route to the ready ones; the
    supervisor alone moves a row through its states."""

    class State(models.TextChoices):
        REQUESTED = "requested"  # a request asked for a version no engine serves (on-demand start)
        STARTING = "starting"
        READY = "ready"
        DRAINING = "draining"  # replaced: finishes the requests it has, takes no new ones
        STOPPED = "stopped"
        FAILED = "failed"

    LIVE = (State.STARTING, State.READY)

    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.CASCADE, related_name="engines")
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED)
    served_name = models.CharField(max_length=100, blank=True, help_text="the model name the engine serves")
    base_url = models.CharField(max_length=200, blank=True, help_text="http://host:port (no /v1)")
    pid = models.IntegerField(null=True, blank=True)
    supervisor = models.CharField(max_length=200, blank=True, help_text="host:pid of the supervisor that runs it")
    error = models.TextField(blank=True)
    log_path = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="last request routed to it (coarse)")

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One engine starting or serving a version at a time; a replacement is a new version.
            models.UniqueConstraint(fields=["model_version"], condition=models.Q(state__in=["requested", "starting",
                                                                                           "ready"]),
                                    name="one_live_engine_per_version"),
        ]

    def __str__(self) -> str:
        return f"engine {self.pk} ({self.state}) for model version {self.model_version_id} at {self.base_url}"
