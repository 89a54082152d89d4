"""Per-caller request limit of /v1 (RLHF_API_RATE_LIMIT requests a minute), counted in the shared
cache so every web process counts against the same budget.

A fixed one-minute window: one counter per caller and minute, cheap and exact on Redis (INCR is
atomic); the file cache's increment is read-then-write, so concurrent processes may undercount by
a little, which a limit meant against runaway scripts tolerates.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

from .errors import OpenAIError

WINDOW_SECONDS = 60


def rate_limit_hit(*, rate_key: str) -> None:
    """Count one request; 429 when the caller is over its budget for this minute."""
    limit = settings.RLHF_API_RATE_LIMIT
    if not limit:
        return
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    counter = f"rlhf:v1-rate:{rate_key}:{window}"
    cache.add(counter, 0, timeout=WINDOW_SECONDS * 2)
    try:
        count = cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.set(counter, 1, timeout=WINDOW_SECONDS * 2)
        count = 1
    if count > limit:
        retry = int(WINDOW_SECONDS - now % WINDOW_SECONDS) + 1
        raise OpenAIError(f"Rate limit reached: {limit} requests per minute for this key. Try again in "
                          f"{retry} s.", status=429, code="rate_limit_exceeded", headers={"Retry-After": str(retry)})
