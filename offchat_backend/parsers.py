"""The API's only parser."""

from rest_framework import exceptions
from rest_framework.parsers import JSONParser


class DepthSafeJSONParser(JSONParser):
    """DRF's JSONParser, answering 400 instead of a 500 for JSON nested deeper than Python's
    recursion limit (20,000 brackets fit in a small body).

    Size needs nothing here: DRF reads JSON bodies through `request.body`, where Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE applies, and offchat_backend.exception_handler answers that with a 413."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as too_deep:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from too_deep
