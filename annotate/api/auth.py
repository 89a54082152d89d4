"""Tokens and users: sign in for a token, list and revoke tokens, users and their accounts."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError
from config.throttle import password_attempt_check, password_failure_record

from ..models import ApiToken
from ..permissions import IsAdmin, IsAnnotatorOrAdmin
from ..roles import is_admin
from ..services.tokens import api_token_create, api_token_list, api_token_revoke
from ..services.users import token_sign_in, user_create, user_password_change, user_update
from . import serializers as s


def _token_reply(token: ApiToken, key: str) -> dict:
    return {"token": key, "id": token.pk, "expires_at": token.expires_at}


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=s.TokenRequest, responses=s.TokenReply,
                   summary="Exchange username and password for a new API token (shown once)")
    def post(self, request):
        data = s.TokenRequest(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        password_attempt_check(request, username=username)  # before the (deliberately slow) hash
        try:
            token, key = token_sign_in(**data.validated_data)
        except ApplicationError as exc:
            if exc.code == "invalid_credentials":
                password_failure_record(request, username=username)
            raise
        return Response(_token_reply(token, key))


class TokensView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(parameters=[OpenApiParameter("user", int, description="another user's tokens (admins)")],
                   responses=s.TokenOut(many=True), summary="Your live API tokens (never the keys)")
    def get(self, request):
        user = request.user
        if request.query_params.get("user") and is_admin(request.user):
            user = get_user_model().objects.filter(pk=s.IdField().run_validation(request.query_params["user"])).first()
            if user is None:
                return Response([])
        current = request.auth.pk if isinstance(request.auth, ApiToken) else None
        return Response(s.TokenOut(api_token_list(user=user), many=True, context={"current_id": current}).data)

    @extend_schema(request=s.TokenCreateRequest, responses={201: s.TokenReply},
                   summary="Make a new API token for yourself (the key is shown once)")
    def post(self, request):
        data = s.TokenCreateRequest(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = api_token_create(user=request.user, name=data.validated_data["name"])
        return Response(_token_reply(token, key), status=status.HTTP_201_CREATED)


class TokenDetailView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(responses={204: None}, summary="Revoke one of your tokens (admins: anyone's)")
    def delete(self, request, token_id: int):
        api_token_revoke(token_id=token_id, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UsersView(APIView):
    def get_permissions(self):
        return [IsAdmin()] if self.request.method == "POST" else [IsAnnotatorOrAdmin()]

    @extend_schema(responses=s.UserOut(many=True), summary="Users (admins see everyone, annotators themselves)")
    def get(self, request):
        users = get_user_model().objects.order_by("id").prefetch_related("groups")
        if not is_admin(request.user):
            users = users.filter(pk=request.user.pk)
        return Response(s.UserOut(users, many=True).data)

    @extend_schema(request=s.UserCreateRequest, responses={201: s.UserOut}, summary="Create a user (admin)")
    def post(self, request):
        data = s.UserCreateRequest(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(**data.validated_data)
        return Response(s.UserOut(user).data, status=status.HTTP_201_CREATED)


class UserDetailView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=s.UserUpdateRequest, responses=s.UserOut,
                   summary="Deactivate or reactivate a user, reset their password, change their role (admin)")
    def patch(self, request, user_id: int):
        data = s.UserUpdateRequest(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_update(user_id=user_id, by=request.user, **data.validated_data)
        return Response(s.UserOut(user).data)


class MeView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(responses=s.UserOut, summary="The signed-in user and their role")
    def get(self, request):
        return Response(s.UserOut(request.user).data)


class PasswordView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(request=s.PasswordChangeRequest, responses={204: None},
                   summary="Change your password; all your API tokens are revoked")
    def post(self, request):
        data = s.PasswordChangeRequest(data=request.data)
        data.is_valid(raise_exception=True)
        password_attempt_check(request, username=request.user.get_username())
        try:
            user_password_change(user=request.user, **data.validated_data)
        except ApplicationError as exc:
            if exc.code == "invalid_credentials":
                password_failure_record(request, username=request.user.get_username())
            raise
        if request.session is not None and request.user.is_authenticated:
            from django.contrib.auth import update_session_auth_hash

            update_session_auth_hash(request._request, request.user)  # this browser stays signed in
        return Response(status=status.HTTP_204_NO_CONTENT)
