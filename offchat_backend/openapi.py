"""The OpenAPI schema (drf-spectacular): every operation lists the errors it can answer.

DRF cannot say which errors a view raises, but our views follow fixed rules, so the schema
derives them: 400 for a body or query to validate, 401 where a token is needed, 403 behind
a staff-only permission, 404 for a path with an id, 429 wherever a throttle applies. Views
add what the rules cannot see with `extend_schema(responses=...)`.
"""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(required=False)


VALIDATION_ERROR = OpenApiResponse(
    {
        "type": "object",
        "description": "Each invalid field (or `non_field_errors`) with its messages.",
        "additionalProperties": {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
        "example": {"status": ['"busy" is not a valid status. Allowed values: online, away.']},
    },
    description="Invalid input.",
)
ERROR_DESCRIPTIONS = {
    "401": "No token, or an invalid, expired or revoked one.",
    "403": "Signed in, but not allowed (staff only).",
    "404": "No such object, or not yours.",
    "429": "Too many requests; `Retry-After` says when to try again.",
}
WRITE_METHODS = {"POST", "PUT", "PATCH"}


class SessionJWTScheme(SimpleJWTScheme):
    """Our JWT authentication is simplejwt's, plus the session check: the same Bearer scheme."""

    target_class = "users.api.authentication.SessionJWTAuthentication"


def error(code: str, description: str | None = None) -> OpenApiResponse:
    """An error response for `extend_schema(responses=...)`, in the shape every error has."""
    return OpenApiResponse(ErrorSerializer, description=description or ERROR_DESCRIPTIONS[code])


class AutoSchema(SpectacularAutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code, response in self._error_responses().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return dict(sorted(responses.items()))

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and getattr(serializer, "rejects_unknown_fields", False):
            schema["additionalProperties"] = False  # the serializer refuses them with a 400
        return schema

    def validates_query(self) -> bool:
        """Whether the operation validates its query string (400) though it is no list view;
        a view's own schema class says so."""
        return False

    def _error_responses(self) -> dict[str, OpenApiResponse]:
        permissions = self.view.get_permissions()
        errors = {}
        if self.method in WRITE_METHODS or self._is_list_view() or self.validates_query():
            errors["400"] = VALIDATION_ERROR
        if not all(isinstance(permission, AllowAny) for permission in permissions):
            errors["401"] = error("401")
        # A tuple, not AllowAny | IsAuthenticated: DRF overloads | to compose permissions.
        plain = (AllowAny, IsAuthenticated)
        if any(not isinstance(permission, plain) for permission in permissions):
            errors["403"] = error("403")
        if "{" in self.path:
            errors["404"] = error("404")
        elif self._is_list_view() and self.view.pagination_class is not None:
            errors["404"] = error("404", "A page past the last, or a forged keyset position (`after`).")
        if self.view.get_throttles():
            errors["429"] = error("429")
        return errors
