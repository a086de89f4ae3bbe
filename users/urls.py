from django.urls import path
from rest_framework.routers import SimpleRouter

from users import views

router = SimpleRouter()
router.register("admin/users", views.AdminUserViewSet, basename="admin-users")
router.register("me/sessions", views.MySessionViewSet, basename="my-sessions")

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("token/refresh/", views.TokenRefreshView.as_view(), name="token-refresh"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("heartbeat/", views.HeartbeatView.as_view(), name="heartbeat"),
    path("all-users/", views.AllUsersView.as_view(), name="all-users"),
    path("me/", views.MeView.as_view(), name="me"),
    path("me/presence/", views.MyPresenceView.as_view(), name="my-presence"),
    *router.urls,
]
