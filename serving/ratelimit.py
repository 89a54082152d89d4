"""Per-caller request limit of /v1 (RLHF_API_RATE_LIMIT requests a minute), counted in the shared
cache so every web process counts against the same budget (config/throttle.py: a fixed
one-minute window, counted atomically on every cache backend)."""

from __future__ import annotations

from django.conf import settings

from config.throttle import counter_hit

from .errors import OpenAIError

WINDOW_SECONDS = 60


def rate_limit_hit(*, rate_key: str, units: int = 1) -> None:
    """Count a request as `units` (a request for several completions counts one per completion);
    429 when the caller is over its budget for this minute."""
    limit = settings.RLHF_API_RATE_LIMIT
    if not limit or units < 1:
        return
    window = counter_hit(f"v1-rate:{rate_key}", window_seconds=WINDOW_SECONDS, amount=units)
    if window.count > limit:
        raise OpenAIError(f"Rate limit reached: {limit} requests per minute for this key. Try again in "
                          f"{window.retry_after} s.", status=429, code="rate_limit_exceeded",
                          headers={"Retry-After": str(window.retry_after)})
