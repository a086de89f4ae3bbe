from django.urls import path

from dashboard.views import DashboardPage

app_name = "dashboard"
urlpatterns = [
    path("", DashboardPage.as_view(template_name="dashboard/presence.html"), name="presence"),
    path("login/", DashboardPage.as_view(template_name="dashboard/login.html"), name="login"),
]
