"""The project's URLs as a newcomer meets them: the root, the addresses that README's quick
start and scripts/run print, and unknown URLs, which answer JSON in development too."""

import json
import re
import subprocess
import sys

import pytest

from offchat_backend.tests.support import REPO, clean_env
from users.tests.factories import StaffFactory
from users.tests.helpers import client_for

pytestmark = pytest.mark.django_db

LOCAL = re.compile(r"http://127\.0\.0\.1:(?:8000|\$PORT)(/[^\s<>\"'`),]*)")


def quick_start():
    """README up to its first section: the part a newcomer reads before running anything."""
    return (REPO / "README.md").read_text().split("\n## ", 1)[0]


def banner():
    return "\n".join(line for line in (REPO / "scripts/run").read_text().splitlines() if line.startswith("echo"))


def test_the_root_redirects_to_the_dashboard(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/", follow=True).status_code == 200


@pytest.mark.parametrize("text", [banner, quick_start], ids=["scripts/run", "README"])
def test_every_local_url_printed_for_a_newcomer_answers(client, text):
    paths = set(LOCAL.findall(text()))
    assert {"/dashboard/", "/api/docs/"} <= paths
    for path in paths:
        # Anonymous, as a browser opening it: /admin/ goes on to its login page.
        assert client.get(path, follow=True).status_code != 404, path


def test_every_link_of_the_quick_start_opens_a_page(client):
    links = re.findall(r"<http://127\.0\.0\.1:8000(/[^>]*)>", quick_start())
    assert "/dashboard/" in links
    for path in links:
        assert client.get(path, follow=True).status_code == 200, path


# --- Unknown URLs in development (DEBUG=True) ------------------------------------------
SHOW_MIDDLEWARE = "import json; from offchat_backend.settings import development as s; print(json.dumps(s.MIDDLEWARE))"


@pytest.fixture(scope="module")
def development_middleware(tmp_path_factory):
    """The development settings' MIDDLEWARE, loaded in a process of its own: importing the
    module here would change the shared settings dicts of this test process."""
    result = subprocess.run(
        [sys.executable, "-c", SHOW_MIDDLEWARE],
        cwd=REPO,
        env=clean_env(LOCAL_STATE_DIR=str(tmp_path_factory.mktemp("state"))),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.fixture
def development(settings, development_middleware):
    settings.DEBUG = True
    settings.MIDDLEWARE = development_middleware
    return settings


def test_development_puts_the_json_404_before_the_append_slash_redirect(development_middleware):
    json_404 = development_middleware.index("offchat_backend.middleware.JsonNotFoundMiddleware")
    assert json_404 < development_middleware.index("django.middleware.common.CommonMiddleware")


def test_without_it_debug_answers_an_html_404(client, settings):
    """The premise: DEBUG bypasses handler404 for Django's technical 404 page."""
    settings.DEBUG = True
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/no-such-page/", "/api/no-such-endpoint/", "/api/users/nope/", "/dashboard/x/"])
def test_an_unknown_url_is_a_json_404_in_development(client, development, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_an_api_404_stays_the_apis_own_in_development(development):
    response = client_for(StaffFactory()).get("/api/users/admin/users/999999/online-status/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail"}


@pytest.mark.parametrize("path", ["/api/health", "/dashboard", "/api/docs"])
def test_append_slash_still_redirects_in_development(client, development, path):
    response = client.get(path)
    assert response.status_code == 301
    assert response["Location"] == f"{path}/"


def test_the_pages_still_answer_in_development(client, development):
    assert client.get("/dashboard/").status_code == 200
    assert client.get("/", follow=True).redirect_chain == [("/dashboard/", 302)]
