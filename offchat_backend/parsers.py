"""The API's only parser: JSON, bounded in size and nesting."""

import io

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser


class RequestBodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_body_too_large"

    def __init__(self):
        super().__init__(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser reads the whole stream, whatever its size: Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE guards only `request.body`, not the stream DRF reads. This
    one reads at most that many bytes (413 past it, declared length or not), and answers
    400, not a 500, for JSON nested deeper than Python's recursion limit."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            request = (parser_context or {}).get("request")
            declared = request.META.get("CONTENT_LENGTH") if request is not None else None
            if declared and declared.isdigit() and int(declared) > limit:
                raise RequestBodyTooLarge()
            body = stream.read(limit + 1)
            if len(body) > limit:
                raise RequestBodyTooLarge()
            stream = io.BytesIO(body)
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as too_deep:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from too_deep
