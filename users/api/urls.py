from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from users.api import auth, history, lists, presence

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
    path("me/history/", history.MyHistoryView.as_view(), name="my-history"),
    # The router's id pattern: a malformed id is a 404 from the view, like the other admin paths.
    re_path(
        r"^admin/users/(?P<pk>[^/.]+)/history/$", history.AdminUserHistoryView.as_view(), name="admin-user-history"
    ),
    path("admin/presence/timeline/", history.PresenceTimelineView.as_view(), name="admin-presence-timeline"),
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
    path("my-permissions/", lists.MyPermissionsView.as_view(), name="offchat-my-permissions"),
]
