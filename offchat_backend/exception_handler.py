"""DRF's EXCEPTION_HANDLER: the one place that turns errors into JSON answers with a status."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from offchat_backend.errors import DomainError


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


class _DomainErrorAnswer(exceptions.APIException):
    def __init__(self, error: DomainError):
        if error.field:
            detail = {error.field: [error.message], "code": error.code}
        elif error.code:
            detail = {"detail": error.message, "code": error.code}
        else:
            detail = error.message
        super().__init__(detail)
        self.status_code = error.status


def handle_api_exception(exc, context):
    """Domain and library errors first become DRF exceptions, then DRF answers them."""
    return exception_handler(_as_api_exception(exc, context), context)


def _as_api_exception(exc, context):
    if isinstance(exc, DomainError):
        answer = _DomainErrorAnswer(exc)
        if answer.status_code == status.HTTP_401_UNAUTHORIZED:
            _challenge_or_forbid(answer, context)
        return answer
    if isinstance(exc, TokenError):
        return InvalidToken(str(exc))
    if isinstance(exc, OperationalError | InterfaceError):
        return DatabaseUnavailable()
    if isinstance(exc, RequestDataTooBig):  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        return RequestBodyTooLarge()
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(as_serializer_error(exc))
    return exc


def _challenge_or_forbid(answer, context):
    """DRF's rule for AuthenticationFailed, applied to a domain 401: a 401 carries the view's
    WWW-Authenticate challenge; a view with no scheme to name answers 403 instead."""
    view, request = context.get("view"), context.get("request")
    challenge = view.get_authenticate_header(request) if view is not None else None
    if challenge:
        answer.auth_header = challenge
    else:
        answer.status_code = status.HTTP_403_FORBIDDEN
