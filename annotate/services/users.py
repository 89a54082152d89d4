"""Users: create one with a role, change role, activity and password (admins), change one's own
password, exchange credentials for an API token."""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from config.errors import ApplicationError, Conflict, NotFound

from ..roles import ADMIN_GROUP, ANNOTATOR_GROUP, ROLES
from .tokens import api_token_create, api_tokens_revoke_all


@transaction.atomic
def user_create(*, username: str, password: str, role: str = "annotator"):
    if role not in ROLES:
        raise ApplicationError(f"role must be one of {', '.join(ROLES)}, not {role!r}", code="invalid_role")
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise Conflict(f"a user named {username!r} already exists", code="user_exists")
    user = User(username=username)
    _password_check(password, user)
    user.set_password(password)
    user.save()
    _role_set(user, role)
    return user


def _password_check(password: str, user) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ApplicationError("password rejected: " + " ".join(exc.messages), code="invalid_password") from None


def _role_set(user, role: str) -> None:
    if role not in ROLES:
        raise ApplicationError(f"role must be one of {', '.join(ROLES)}, not {role!r}", code="invalid_role")
    user.groups.remove(*Group.objects.filter(name__in=[ADMIN_GROUP, ANNOTATOR_GROUP]))
    group, _ = Group.objects.get_or_create(name=ADMIN_GROUP if role == "admin" else ANNOTATOR_GROUP)
    user.groups.add(group)
    user.__dict__.pop("_rlhf_is_admin", None)


def _password_set(user, password: str) -> None:
    """A new password; every API token of the user stops working (and every session, which
    Django ties to the password hash)."""
    _password_check(password, user)
    user.set_password(password)
    user.save(update_fields=["password"])
    api_tokens_revoke_all(user=user)


@transaction.atomic
def user_update(*, user_id: int, by, is_active: bool | None = None, password: str | None = None,
                role: str | None = None):
    """An admin deactivates or reactivates a user, resets their password or changes their role.
    A deactivated user's tokens are revoked and their sessions refused."""
    User = get_user_model()
    user = User.objects.select_for_update().filter(pk=user_id).first()
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    if user.pk == by.pk and (is_active is False or (role is not None and role != "admin")):
        raise ApplicationError("admins cannot deactivate or demote themselves; ask another admin",
                               code="invalid_user_update")
    if role is not None:
        if user.is_superuser and role != "admin":
            raise ApplicationError("a superuser is always an admin", code="invalid_role")
        _role_set(user, role)
    if password is not None:
        _password_set(user, password)
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        user.save(update_fields=["is_active"])
        if not is_active:
            api_tokens_revoke_all(user=user)
    return user


@transaction.atomic
def user_password_change(*, user, old_password: str, new_password: str):
    """A user changes their own password, giving the current one."""
    if not user.check_password(old_password):
        raise ApplicationError("the current password is wrong", code="invalid_credentials", status=400)
    _password_set(user, new_password)
    return user


def token_sign_in(*, username: str, password: str, name: str = "api"):
    """A new API token for the user with this username and password: (row, key)."""
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        raise ApplicationError("wrong username or password", code="invalid_credentials", status=400)
    return api_token_create(user=user, name=name)


def token_obtain(*, username: str, password: str, name: str = "api") -> str:
    """The key of a new API token (token_sign_in without the row)."""
    return token_sign_in(username=username, password=password, name=name)[1]

