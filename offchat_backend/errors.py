"""Errors every transport understands, and Django's JSON error pages.

A domain error carries its HTTP status and a stable code on the class; the services and
selectors raise it without knowing which transport called them. The REST API answers it in
offchat_backend.exception_handler; other transports (a socket's close code) read the same
`status` and `code`. Nothing here imports DRF, so the domain layer can raise these.
"""

from django.http import JsonResponse


class DomainError(Exception):
    """`status`: the HTTP status it means. `code`: a stable machine-readable name (None: the
    answer is only `detail`). `field`: for input errors, the parameter at fault: the answer
    is then `{field: [message], "code": code}`, like a validation error."""

    status = 400
    code: str | None = None
    field: str | None = None
    message = ""

    def __init__(self, message=None):
        super().__init__(message or self.message)
        self.message = message or self.message


# Django's error handlers, for what never reaches a DRF view: the same {"detail": ...} shape.
def bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request."}, status=400)


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request):
    return JsonResponse({"detail": "Server error."}, status=500)
