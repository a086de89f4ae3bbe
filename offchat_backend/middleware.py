"""Development's JSON 404s; database connections of requests answered under ASGI.

With DEBUG on, Django answers an unknown URL (and any Http404) with its HTML technical 404
page instead of calling handler404, so the API's promise that errors are JSON would hold in
production only. JsonNotFoundMiddleware, used by the development settings, replaces that
page with the body handler404 gives in production (offchat_backend.errors.not_found). The
500 page needs no such help: DEBUG's HTML 500 is the traceback a developer wants.
"""

from django.core.handlers.asgi import ASGIRequest
from django.db import connections

from offchat_backend.errors import not_found


class JsonNotFoundMiddleware:
    """Turns an HTML 404 into the project's JSON 404. Place it before CommonMiddleware, so
    that APPEND_SLASH still turns a 404 for `/path` into a redirect to `/path/` first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code == 404 and response.get("Content-Type", "").startswith("text/html"):
            return not_found(request)
        return response


class AsgiConnectionClosingMiddleware:
    """Closes a request's database connections when an ASGI server (daphne: health checks and
    scrapes of the socket process) answered it. Django keeps a persistent connection
    (CONN_MAX_AGE) in the request's context, which under ASGI ends with the request, while
    request_finished, which would close an obsolete one, runs in another context: the
    connection stayed open until the garbage collector found it, rarely with the ASGI
    process's thresholds (ASGI_GC_THRESHOLDS): 30 health checks held 30 PostgreSQL
    connections. gunicorn's requests (WSGI) keep theirs for the next request. First in
    MIDDLEWARE: it closes after every other middleware's writes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if isinstance(request, ASGIRequest):
            connections.close_all()
        return response
