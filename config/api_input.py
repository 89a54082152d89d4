"""What every API view does with its input first: run a serializer (its errors become the one error
shape through config/errors.py) and read integer query parameters with a clear 400."""

from __future__ import annotations

from .errors import ApplicationError


def valid_data(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def int_param(request, name: str) -> int:
    raw = request.query_params.get(name)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ApplicationError(f"query parameter {name} must be an integer, got {raw!r}", code="invalid_query",
                               details={name: "not an integer"}) from None
