"""Tokens and users."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError
from config.throttle import password_attempt_check, password_failure_record

from ..permissions import IsAdmin, IsAnnotatorOrAdmin
from ..roles import is_admin
from ..services.users import token_obtain, user_create
from . import serializers as s


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=s.TokenRequest, responses=s.TokenReply, summary="Exchange username and password for an API token")
    def post(self, request):
        data = s.TokenRequest(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        password_attempt_check(request, username=username)  # before the (deliberately slow) hash
        try:
            token = token_obtain(**data.validated_data)
        except ApplicationError as exc:
            if exc.code == "invalid_credentials":
                password_failure_record(request, username=username)
            raise
        return Response({"token": token})


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


class MeView(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(responses=s.UserOut, summary="The signed-in user and their role")
    def get(self, request):
        return Response(s.UserOut(request.user).data)
