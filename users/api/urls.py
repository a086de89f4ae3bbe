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
    # The OffChat frontend's name for /me/.
    path("profile/", presence.MeView.as_view(), name="profile"),
    *router.urls,
]

# The OffChat frontend's paths (its contract: users/tests/api/test_offchat_contract.py), the
# same views as ours under /api/users/.
auth_urlpatterns = [
    path("login/", auth.LoginView.as_view(), name="offchat-login"),
    path("refresh/", auth.TokenRefreshView.as_view(), name="offchat-refresh"),
    path("logout/", auth.LogoutView.as_view(), name="offchat-logout"),
]
admin_urlpatterns = [
    path("dashboard/stats/", lists.DashboardStatsView.as_view(), name="offchat-dashboard-stats"),
]
