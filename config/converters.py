"""`<id:name>` in URL patterns: a row id, 1 to 2**63 - 1 (the range of the id columns).

Django's `<int:…>` matches any run of digits, so 99999999999999999999 reached the raw SQL of the
annotation hot path and failed there with a 500; an id outside the range now matches no URL and
is a 404 like any other id that names nothing. Importing this module registers the converter.
"""

from __future__ import annotations

from django.urls import register_converter

MAX_ID = 2**63 - 1


class IdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 0 < number <= MAX_ID:
            raise ValueError(f"{value} is not a row id")  # no match: the URL is a 404
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")
