"""One place that turns errors into JSON responses with the right status."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from users.exceptions import InvalidCursorError, RefreshTokenNotOwnedError, ResyncRequiredError


class RequestBodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_body_too_large"

    def __init__(self):
        super().__init__(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")


class DatabaseUnavailable(exceptions.APIException):
    """The database cannot be reached (a restart, a failover): a client should retry, not
    report a bug. `wait` becomes DRF's Retry-After header."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is briefly unavailable; retry in a few seconds."
    default_code = "database_unavailable"
    wait = 5


def handle_api_exception(exc, context):
    """DRF's EXCEPTION_HANDLER: domain and library errors first become DRF exceptions."""
    return exception_handler(_as_api_exception(exc), context)


def _as_api_exception(exc):
    if isinstance(exc, RefreshTokenNotOwnedError):
        return exceptions.PermissionDenied(exc.message)
    if isinstance(exc, InvalidCursorError | ResyncRequiredError):
        # `code` tells a client to reload the full list (resync_required) or fix its request.
        return exceptions.ValidationError({"since": [exc.message], "code": exc.code})
    if isinstance(exc, TokenError):
        return InvalidToken(str(exc))
    if isinstance(exc, OperationalError | InterfaceError):
        return DatabaseUnavailable()
    if isinstance(exc, RequestDataTooBig):  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        return RequestBodyTooLarge()
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(as_serializer_error(exc))
    return exc


# Django's error handlers, for what never reaches a DRF view: the same {"detail": ...} shape.
def bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request."}, status=400)


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request):
    return JsonResponse({"detail": "Server error."}, status=500)
