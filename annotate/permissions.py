"""DRF permission classes for the two roles; worker's API reuses them."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from .roles import is_admin


class IsAdmin(BasePermission):
    message = "Only admins may do this."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_admin(request.user))


class IsAnnotatorOrAdmin(BasePermission):
    """Any signed-in, active user: everyone who is not an admin is an annotator."""

    message = "Sign in as an annotator or admin."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_active)
