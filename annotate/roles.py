"""Who is an admin and who an annotator: superusers and the "admin" group are admins, every
other active user annotates."""

from __future__ import annotations

ADMIN_GROUP = "admin"
ANNOTATOR_GROUP = "annotator"
ROLES = ("annotator", "admin")


def is_admin(user) -> bool:
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: permission checks ask several times per request.
    cached = getattr(user, "_rlhf_is_admin", None)
    if cached is None:
        cached = user.groups.filter(name=ADMIN_GROUP).exists()
        user._rlhf_is_admin = cached
    return cached


def role_of(user) -> str:
    return "admin" if is_admin(user) else "annotator"
