from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from users.api.serializers.ops import HealthSerializer
from users.ops.health import UNAVAILABLE, system_health


@extend_schema(
    responses={
        200: OpenApiResponse(HealthSerializer, description="ok, or degraded (cache or broker down)."),
        503: OpenApiResponse(HealthSerializer, description="The database is unreachable or the sweeper stalled."),
    },
)
class HealthView(generics.GenericAPIView):
    """Database, cache, broker and sweeper liveness. No authentication and nothing secret, so
    load balancers and uptime checks can call it; not throttled, for the same reason."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []
    serializer_class = HealthSerializer

    def get(self, request):
        health = system_health()
        code = status.HTTP_503_SERVICE_UNAVAILABLE if health.status == UNAVAILABLE else status.HTTP_200_OK
        return Response(self.get_serializer(health.as_dict()).data, status=code, headers={"Cache-Control": "no-store"})
