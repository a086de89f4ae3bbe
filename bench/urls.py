from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication


class NoOpView(APIView):
    """The stack's limit: the same JWT authentication and permission as the API, no work."""

    def get(self, request):
        return Response(status=204)

    def post(self, request):
        return Response(status=204)


class StockJWTNoOpView(NoOpView):
    """The same no-op behind simplejwt's own authentication (a user lookup by id, no session
    check): what our session check costs on every request."""

    authentication_classes = [JWTAuthentication]


urlpatterns = [
    path("bench/noop/", NoOpView.as_view()),
    path("bench/noop-stock-jwt/", StockJWTNoOpView.as_view()),
    path("", include("offchat_backend.urls")),
]
