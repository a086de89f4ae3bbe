from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from users.api.ops import HealthView
from users.ops.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/users/", include("users.api.urls")),
    path("api/health/", HealthView.as_view(), name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("metrics", metrics_view, name="metrics"),
    path("dashboard/", include("dashboard.urls")),
]

handler400 = "offchat_backend.errors.bad_request"
handler404 = "offchat_backend.errors.not_found"
handler500 = "offchat_backend.errors.server_error"
