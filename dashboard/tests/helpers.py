"""Shared helpers of the dashboard's browser tests: Chromium, pages that record what they
do, signing in, and the ASGI server that serves the live page."""

import os
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings as django_settings

from offchat_backend.tests.support import AsgiServer
from users.tests.factories import PASSWORD

CHROMIUM = os.environ.get("OFFCHAT_CHROMIUM", "/usr/bin/chromium")
# No connections to Google's services from a closed network, and no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(os.environ.get("OFFCHAT_TEST_OUTPUT", Path(django_settings.BASE_DIR) / "test-output"))
WAIT_MS = 15_000


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def new_page(browser, **options):
    """A page that records its errors, its requests to the user list (`api_calls`) and the
    WebSockets it opens (`sockets`). `options` go to the browser context (timezone_id...)."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, **options)
    page = context.new_page()
    page.errors = []
    page.api_calls = []
    page.sockets = []
    page.on("request", lambda request: "/api/users/admin/users/?" in request.url and page.api_calls.append(request.url))
    page.on("websocket", lambda socket: page.sockets.append(socket.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    yield page
    context.close()


@contextmanager
def dashboard_server(tmp_path, **env):
    """daphne on the test database, serving the static files too (asgi_settings: whitenoise).
    It polls once an hour: whatever updates the page within seconds came through the socket.
    `env`: more of the server's settings."""
    static_root = tmp_path / "static"  # whitenoise looks there first (empty: no collectstatic)
    static_root.mkdir()
    server = AsgiServer(
        tmp_path,
        DJANGO_SETTINGS_MODULE="dashboard.tests.asgi_settings",
        DASHBOARD_POLL_INTERVAL="3600",
        STATIC_ROOT=str(static_root),
        **env,
    )
    try:
        yield server
    finally:
        server.stop()


def row(page, username):
    return page.locator(f'tr[data-username="{username}"]')


def sign_in(page, base_url, username, password=PASSWORD):
    page.goto(f"{base_url}/dashboard/")
    page.wait_for_url("**/dashboard/login/")  # not signed in yet
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
