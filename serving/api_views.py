"""/api endpoints of the model API, in the project's /api error shape: API keys (admins) and
tokenize (any signed-in user, for the playground's token view)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.permissions import IsAdmin
from config.errors import ApplicationError

from .errors import OpenAIError
from .keys import api_key_create, api_key_list, api_key_revoke
from .pieces import id_pieces_of, token_pieces_of
from .resolve import served_model_resolve

MAX_TOKENIZE_CHARS = 100_000
MAX_TOKENIZE_IDS = 50_000


class KeyOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username", default=None)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField()


class KeyCreated(KeyOut):
    key = serializers.CharField(help_text="the key itself, shown this once")


class KeyCreateRequest(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class KeysView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=KeyOut(many=True), summary="API keys of the model API (admin)")
    def get(self, request):
        return Response(KeyOut(api_key_list(), many=True).data)

    @extend_schema(request=KeyCreateRequest, responses={201: KeyCreated},
                   summary="Create an API key; the answer holds the key, shown once (admin)")
    def post(self, request):
        data = KeyCreateRequest(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = api_key_create(name=data.validated_data["name"], created_by=request.user)
        return Response({**KeyOut(key).data, "key": raw}, status=status.HTTP_201_CREATED)


class KeyDetailView(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses={204: None}, summary="Revoke an API key (admin)")
    def delete(self, request, key_id: int):
        api_key_revoke(key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenizeRequest(serializers.Serializer):
    model = serializers.CharField(max_length=200)
    text = serializers.CharField(max_length=MAX_TOKENIZE_CHARS, allow_blank=True, trim_whitespace=False,
                                 required=False, help_text="text to split into tokens")
    ids = serializers.ListField(child=serializers.IntegerField(), max_length=MAX_TOKENIZE_IDS, required=False,
                                help_text="or token ids to show as pieces, e.g. a /v1 answer's prompt_token_ids")

    def validate(self, attrs):
        if ("text" in attrs) == ("ids" in attrs):
            raise serializers.ValidationError("Give either 'text' or 'ids'.")
        return attrs


class TokenPiece(serializers.Serializer):
    id = serializers.IntegerField()
    piece = serializers.CharField(help_text="the token's text")
    token = serializers.CharField(help_text="its vocabulary entry (byte-level BPE writes a space as Ġ)")


class TokenizeOut(serializers.Serializer):
    model = serializers.CharField()
    version_id = serializers.IntegerField()
    tokens = TokenPiece(many=True)


class TokenizeView(APIView):
    @extend_schema(request=TokenizeRequest, responses=TokenizeOut,
                   summary="Split text into the tokens of a served model, or show token ids as their pieces "
                           "(playground)")
    def post(self, request):
        data = TokenizeRequest(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        try:
            served = served_model_resolve(model=given["model"])
            pieces = id_pieces_of(served, given["ids"]) if "ids" in given else token_pieces_of(served, given["text"])
        except OpenAIError as exc:  # /api speaks the project's error shape
            raise ApplicationError(exc.message, code=exc.code or "invalid", status=exc.status,
                                   details={"param": exc.param} if exc.param else None) from None
        return Response({"model": served.requested, "version_id": served.version_id, "tokens": pieces})
