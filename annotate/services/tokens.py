"""API tokens: make one (the key is returned once), list, revoke, and what authentication checks.

Only the sha256 of a key is stored: keys are 160 random bits, so there is nothing to guess a
dictionary from, and one unsalted hash keeps authentication a single indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from config.errors import NotFound

from ..models import ApiToken
from ..roles import is_admin

# Scripts that sign in on every run make a token each time; the oldest beyond this are dropped.
MAX_TOKENS_PER_USER = 50
# last_used_at is written at most this often per token, so a busy token does not write on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def token_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def password_mark(password_hash: str) -> str:
    """Stands for the user's password hash: changes whenever the password does."""
    return salted_hmac("annotate.api-token", password_hash or "", algorithm="sha256").hexdigest()


def token_matches_password(token_mark: str, password_hash: str) -> bool:
    return constant_time_compare(token_mark, password_mark(password_hash))


@transaction.atomic
def api_token_create(*, user, name: str = "api") -> tuple[ApiToken, str]:
    """A new token for `user`; returns (row, key). The key is not stored and cannot be shown again."""
    now = timezone.now()
    key = secrets.token_hex(20)
    name = (name or "api").strip()[:100] or "api"
    token = ApiToken.objects.create(user=user, name=name, key_hash=token_key_hash(key), prefix=key[:8],
                                    password_mark=password_mark(user.password), created_at=now,
                                    expires_at=now + timedelta(days=settings.RLHF_TOKEN_MAX_AGE_DAYS))
    ApiToken.objects.filter(user=user, expires_at__lte=now).delete()
    keep = ApiToken.objects.filter(user=user).order_by("-created_at", "-id").values("id")[:MAX_TOKENS_PER_USER]
    ApiToken.objects.filter(user=user).exclude(id__in=keep).delete()
    return token, key


def api_token_list(*, user) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user, expires_at__gt=timezone.now()).order_by("-created_at", "-id"))


@transaction.atomic
def api_token_revoke(*, token_id: int, by) -> None:
    """Revoke one token: its owner or an admin may; revoking a token that is gone is a 404."""
    token = ApiToken.objects.filter(pk=token_id).first()
    if token is None or (token.user_id != by.pk and not is_admin(by)):
        raise NotFound(f"token {token_id} does not exist")
    token.delete()


def api_tokens_revoke_all(*, user) -> int:
    return ApiToken.objects.filter(user=user).delete()[0]


def token_touch(token_id: int, last_used_at, now) -> None:
    if last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token_id).update(last_used_at=now)
