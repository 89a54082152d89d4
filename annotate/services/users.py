"""Users and API tokens: create a user with a role, exchange credentials for a token."""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from config.errors import ApplicationError, Conflict

from ..roles import ADMIN_GROUP, ANNOTATOR_GROUP, ROLES


@transaction.atomic
def user_create(*, username: str, password: str, role: str = "annotator"):
    if role not in ROLES:
        raise ApplicationError(f"role must be one of {', '.join(ROLES)}, not {role!r}", code="invalid_role")
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise Conflict(f"a user named {username!r} already exists", code="user_exists")
    user = User(username=username)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ApplicationError("password rejected: " + " ".join(exc.messages), code="invalid_password") from None
    user.set_password(password)
    user.save()
    group, _ = Group.objects.get_or_create(name=ADMIN_GROUP if role == "admin" else ANNOTATOR_GROUP)
    user.groups.add(group)
    return user


def token_obtain(*, username: str, password: str) -> str:
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        raise ApplicationError("wrong username or password", code="invalid_credentials", status=400)
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
