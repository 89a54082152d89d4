"""The API's JSON parser: DRF's, with a body nested too deeply for Python's parser answered as a
400 instead of a RecursionError and a 500 (a 200 kB body of brackets did that)."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
