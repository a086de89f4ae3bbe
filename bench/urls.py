from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class NoOpView(APIView):
    """The stack's limit: the same JWT authentication and permission as the API, no work."""

    def get(self, request):
        return Response(status=204)

    def post(self, request):
        return Response(status=204)


urlpatterns = [
    path("bench/noop/", NoOpView.as_view()),
    path("", include("offchat_backend.urls")),
]
