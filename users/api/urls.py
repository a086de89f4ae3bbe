from django.urls import path
from rest_framework.routers import SimpleRouter

from users.api import auth, lists, presence

router = SimpleRouter()
router.register("admin/users", lists.AdminUserViewSet, basename="admin-users")
router.register("me/sessions", presence.MySessionViewSet, basename="my-sessions")

urlpatterns = [
    path("login/", auth.LoginView.as_view(), name="login"),
    path("token/refresh/", auth.TokenRefreshView.as_view(), name="token-refresh"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("heartbeat/", presence.HeartbeatView.as_view(), name="heartbeat"),
    path("all-users/", lists.AllUsersView.as_view(), name="all-users"),
    path("me/", presence.MeView.as_view(), name="me"),
    path("me/presence/", presence.MyPresenceView.as_view(), name="my-presence"),
    *router.urls,
]
