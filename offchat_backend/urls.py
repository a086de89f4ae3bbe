from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/users/", include("users.urls")),
]

handler400 = "offchat_backend.errors.bad_request"
handler404 = "offchat_backend.errors.not_found"
handler500 = "offchat_backend.errors.server_error"
