"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright),
against a live server on the test database: the browser talks to the real API."""

import os
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings

from users.tests.factories import PASSWORD, StaffFactory, UserFactory

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

pytestmark = [pytest.mark.chromium, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(people, live_server):
    """After the database fixtures: Playwright runs an event loop in this thread, inside which
    Django refuses ORM calls, so the data is made before and flushed after the browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.errors = []
    page.api_calls = []
    page.on("request", lambda request: "/api/users/admin/users/?" in request.url and page.api_calls.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    yield page
    context.close()


@pytest.fixture
def people(settings):
    settings.DASHBOARD_POLL_INTERVAL = 1
    return StaffFactory(username="ada", first_name="Ada", last_name="Lovelace"), UserFactory(username="bob")


def row(page, username):
    return page.locator(f'tr[data-username="{username}"]')


def sign_in(page, base_url, username, password=PASSWORD):
    page.goto(f"{base_url}/dashboard/")
    page.wait_for_url("**/dashboard/login/")  # not signed in yet
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_staff_sees_themselves_online_and_another_user_go_offline(people, live_server, page):
    ada, bob = people
    api = f"{live_server.url}/api/users"
    bob_tokens = requests.post(f"{api}/login/", json={"username": "bob", "password": PASSWORD}, timeout=10).json()

    sign_in(page, live_server.url, "ada")
    page.wait_for_url(f"{live_server.url}/dashboard/")
    assert page.inner_text("#me") == "ada"
    row(page, "ada").locator(".status-text", has_text="online").wait_for(timeout=WAIT_MS)
    row(page, "bob").locator(".status-text", has_text="online").wait_for(timeout=WAIT_MS)
    assert "Ada Lovelace" in row(page, "ada").inner_text()
    full_page_loads = [url for url in page.api_calls if "since=" not in url]

    requests.post(
        f"{api}/logout/",
        json={"refresh": bob_tokens["refresh"]},
        headers={"Authorization": f"Bearer {bob_tokens['access']}"},
        timeout=10,
    ).raise_for_status()

    # The next poll's change feed brings bob's logout; no reload of the page.
    row(page, "bob").locator(".status-text", has_text="offline · last seen just now").wait_for(timeout=WAIT_MS)
    page.wait_for_function("document.getElementById('count-online').textContent === '1'", timeout=WAIT_MS)
    assert page.inner_text("#count-offline") == "1"
    assert row(page, "bob").get_attribute("data-status") == "offline"
    assert row(page, "ada").get_attribute("data-status") == "online"
    # It came through the change feed, in place: the page itself was not loaded again.
    assert any("since=" in url for url in page.api_calls)
    assert [url for url in page.api_calls if "since=" not in url] == full_page_loads

    OUTPUT.mkdir(parents=True, exist_ok=True)
    screenshot = OUTPUT / "dashboard-bob-offline.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    page.fill("#search", "bob")
    page.wait_for_function("document.querySelectorAll('#users tr').length === 1", timeout=WAIT_MS)
    assert page.locator("#users tr").get_attribute("data-username") == "bob"
    assert page.errors == []


def test_a_non_staff_account_is_turned_away_and_signed_out(people, live_server, page):
    sign_in(page, live_server.url, "bob")
    page.locator("#login-error", has_text="This dashboard is for staff accounts.").wait_for(timeout=WAIT_MS)
    assert page.evaluate("sessionStorage.getItem('offchat.access')") is None
    page.goto(f"{live_server.url}/dashboard/")
    page.wait_for_url("**/dashboard/login/")


def test_wrong_credentials_show_an_error(people, live_server, page):
    sign_in(page, live_server.url, "ada", password="wrong")
    page.locator("#login-error", has_text="Wrong username or password.").wait_for(timeout=WAIT_MS)
