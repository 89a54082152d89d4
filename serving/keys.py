"""API keys of the model API: create (the raw key is returned once), revoke, verify a presented key.

Only the sha256 of a key is stored. Keys are 256-bit random strings, so one unsalted hash is
enough: there is no dictionary to guess from, and a hash lookup keeps verification one query.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from config.errors import ApplicationError, NotFound

from .models import APIKey

KEY_PREFIX = "rlhf-"
SHOWN_PREFIX_LENGTH = 12  # "rlhf-" and 7 random characters: enough to tell keys apart in a list
# last_used_at is written at most this often per key, so a busy key does not write on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_list() -> list[APIKey]:
    return list(APIKey.objects.select_related("created_by").order_by("-id"))


@transaction.atomic
def api_key_create(*, name: str, created_by=None) -> tuple[APIKey, str]:
    """A new key; returns (row, raw key). The raw key is not stored and cannot be shown again."""
    name = name.strip()
    if not name:
        raise ApplicationError("A key needs a name.", code="invalid")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = APIKey.objects.create(name=name, prefix=raw[:SHOWN_PREFIX_LENGTH], hashed_key=hash_key(raw),
                                created_by=created_by)
    return key, raw


@transaction.atomic
def api_key_revoke(*, key_id: int) -> APIKey:
    """Revoke a key for good; revoking a revoked key changes nothing."""
    key = APIKey.objects.select_for_update().filter(pk=key_id).first()
    if key is None:
        raise NotFound(f"API key {key_id} does not exist.")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def api_key_verify(*, raw_key: str) -> APIKey:
    """The live key a client presented; 401 when it is unknown or revoked."""
    key = APIKey.objects.filter(hashed_key=hash_key(raw_key)).first() if raw_key else None
    if key is None:
        raise ApplicationError("Incorrect API key provided.", code="invalid_api_key", status=401)
    if key.revoked_at is not None:
        raise ApplicationError("This API key has been revoked.", code="invalid_api_key", status=401)
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        APIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
