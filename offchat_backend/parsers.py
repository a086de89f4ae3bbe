"""The API's only parser."""

import io

from django.http import HttpRequest
from drf_orjson_renderer.parsers import ORJSONParser


class BoundedJSONParser(ORJSONParser):
    """drf-orjson-renderer's parser (orjson read a heartbeat's `{}` in half the time of DRF's
    JSONParser: bench/analysis.md, row 1), reading the body through Django's `request.body`,
    where DATA_UPLOAD_MAX_MEMORY_SIZE applies (a 413, offchat_backend.exception_handler). The
    library reads DRF's stream, the raw request, past that limit.

    Depth needs nothing here: orjson refuses JSON nested deeper than 1,024 levels, a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        if isinstance(stream, HttpRequest):
            stream = io.BytesIO(stream.body)
        return super().parse(stream, media_type, parser_context)
