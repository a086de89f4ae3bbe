import json
import re

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/login/"])
def test_pages_are_served_to_anyone_and_hold_no_data(client, path):
    # The pages are static shells; every datum comes from the API, behind its permissions.
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "/static/dashboard/api.js" in response.content.decode()


def test_the_poll_interval_and_the_socket_path_reach_the_page(client, settings):
    settings.DASHBOARD_POLL_INTERVAL = 7
    html = client.get("/dashboard/").content.decode()
    config = re.search(r'<script id="config" type="application/json">(.*?)</script>', html)
    assert json.loads(config[1]) == {"pollSeconds": 7, "socketPath": "/ws/presence/"}


@pytest.mark.parametrize("name", ["api.js", "login.js", "presence.js", "history.js", "dashboard.css"])
def test_static_files_exist(name):
    assert finders.find(f"dashboard/{name}")
