from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from users.api.ops import HealthView
from users.api.urls import admin_urlpatterns, auth_urlpatterns
from users.ops.metrics import metrics_view

urlpatterns = [
    # Nothing lives at the root: send a browser to the dashboard (temporary, so it can change).
    path("", RedirectView.as_view(pattern_name="dashboard:presence", permanent=False), name="home"),
    path("admin/", admin.site.urls),
    path("api/users/", include("users.api.urls")),
    path("api/auth/", include(auth_urlpatterns)),
    path("api/admin/", include(admin_urlpatterns)),
    path("api/health/", HealthView.as_view(), name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("metrics", metrics_view, name="metrics"),
    path("dashboard/", include("dashboard.urls")),
]

handler400 = "offchat_backend.errors.bad_request"
handler404 = "offchat_backend.errors.not_found"
handler500 = "offchat_backend.errors.server_error"
