"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright),
against a live server on the test database: the browser talks to the real API. The live
tests run the page against a real ASGI server (daphne), which serves the page, its static
files, the API and the presence socket."""

import time

import pytest
import requests
from websockets.sync.client import connect

from dashboard.tests.helpers import OUTPUT, WAIT_MS, chromium, dashboard_server, new_page, row, sign_in
from users.services import auth
from users.tests.factories import PASSWORD, StaffFactory, UserFactory

pytestmark = [pytest.mark.chromium, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(people, live_server):
    """After the database fixtures: Playwright runs an event loop in this thread, inside which
    Django refuses ORM calls, so the data is made before and flushed after the browser."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser):
    with new_page(browser) as opened:
        yield opened


@pytest.fixture
def asgi(tmp_path, people):
    with dashboard_server(tmp_path) as server:
        yield server


@pytest.fixture
def live_page(asgi):
    with chromium() as launched, new_page(launched) as opened:
        yield opened


@pytest.fixture
def people(settings):
    settings.DASHBOARD_POLL_INTERVAL = 1
    return StaffFactory(username="ada", first_name="Ada", last_name="Lovelace"), UserFactory(username="bob")


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
    # The live server is WSGI: no socket (404), so the page kept polling, and says so.
    assert page.inner_text("#mode") == "Polling every 1 s"
    assert [error for error in page.errors if not error.startswith("WebSocket connection to")] == []


def test_a_non_staff_account_is_turned_away_and_signed_out(people, live_server, page):
    sign_in(page, live_server.url, "bob")
    page.locator("#login-error", has_text="This dashboard is for staff accounts.").wait_for(timeout=WAIT_MS)
    assert page.evaluate("sessionStorage.getItem('offchat.access')") is None
    page.goto(f"{live_server.url}/dashboard/")
    page.wait_for_url("**/dashboard/login/")


def test_wrong_credentials_show_an_error(people, live_server, page):
    sign_in(page, live_server.url, "ada", password="wrong")
    page.locator("#login-error", has_text="Wrong username or password.").wait_for(timeout=WAIT_MS)


def test_the_page_goes_live_on_the_socket_and_falls_back_to_polling_when_it_closes(people, asgi, live_page):
    page, base_url = live_page, f"http://127.0.0.1:{asgi.port}"
    status, bob_tokens = asgi.http("/api/users/login/", body={"username": "bob", "password": PASSWORD})
    assert status == 200, bob_tokens
    assert asgi.http("/static/dashboard/presence.js")[0] == 200  # served by daphne (whitenoise)

    sign_in(page, base_url, "ada")
    page.wait_for_url(f"{base_url}/dashboard/")
    row(page, "ada").locator(".status-text", has_text="online").wait_for(timeout=WAIT_MS)
    row(page, "bob").locator(".status-text", has_text="online").wait_for(timeout=WAIT_MS)
    badge = page.locator("#mode")
    page.locator('#mode[data-mode="live"]').wait_for(timeout=WAIT_MS)
    assert badge.inner_text() == "Live"
    assert badge.get_attribute("role") == "status"
    assert badge.get_attribute("aria-label").startswith("Live: changes are pushed")
    # One socket, to the presence path; the token went in a subprotocol, never in the URL.
    access = page.evaluate("sessionStorage.getItem('offchat.access')")
    assert page.sockets == [f"ws://127.0.0.1:{asgi.port}/ws/presence/"]
    assert access not in asgi.output()
    loads = list(page.api_calls)
    assert loads and not any("since=" in url for url in loads)  # the first page, no feed poll
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard-live.png"), full_page=True)

    assert asgi.http("/api/users/logout/", body={"refresh": bob_tokens["refresh"]}, token=bob_tokens["access"])[0] in (
        200,
        204,
    )
    logged_out = time.monotonic()
    # Pushed within 3 s: the page polls once an hour, and asks the user list nothing.
    row(page, "bob").locator(".status-text", has_text="offline · last seen just now").wait_for(timeout=3000)
    assert time.monotonic() - logged_out < 3
    assert row(page, "bob").get_attribute("data-status") == "offline"
    assert row(page, "ada").get_attribute("data-status") == "online"
    page.wait_for_function("document.getElementById('count-online').textContent === '1'", timeout=WAIT_MS)
    assert page.inner_text("#count-offline") == "1"
    assert page.api_calls == loads
    assert page.inner_text("#mode") == "Live"
    assert page.errors == []
    page.screenshot(path=str(OUTPUT / "dashboard-live-bob-offline.png"), full_page=True)

    asgi.stop()
    # The socket closed: the page says it polls, and catches up through the change feed at once.
    page.locator('#mode[data-mode="polling"]').wait_for(timeout=WAIT_MS)
    assert badge.inner_text() == "Polling every 1 h"
    page.wait_for_function("!document.getElementById('error').hidden", timeout=WAIT_MS)
    assert any("since=" in url for url in page.api_calls[len(loads) :])
    assert row(page, "bob").get_attribute("data-status") == "offline"  # the rows stay
    page.screenshot(path=str(OUTPUT / "dashboard-live-fallback.png"), full_page=True)


def test_a_session_logged_out_elsewhere_signs_the_live_page_out(people, asgi, live_page):
    """The session is logged out elsewhere: the socket is closed 4401 and the counts the pushed
    change asks for answer 401; whichever comes first, the page refreshes its token once (one
    refresh shared by both), the refresh is refused, and the page signs out."""
    page, base_url = live_page, f"http://127.0.0.1:{asgi.port}"
    sign_in(page, base_url, "ada")
    page.wait_for_url(f"{base_url}/dashboard/")
    page.locator('#mode[data-mode="live"]').wait_for(timeout=WAIT_MS)
    access, refresh = page.evaluate(
        "[sessionStorage.getItem('offchat.access'), sessionStorage.getItem('offchat.refresh')]"
    )
    refreshes = []
    page.on("request", lambda request: "/api/users/token/refresh/" in request.url and refreshes.append(request.url))

    assert asgi.http("/api/users/logout/", body={"refresh": refresh}, token=access)[0] == 200  # elsewhere

    page.wait_for_url("**/dashboard/login/", timeout=WAIT_MS)
    assert len(refreshes) == 1  # one refresh, shared by the socket and the poll it fell back to
    assert page.evaluate("sessionStorage.getItem('offchat.access')") is None


def test_a_page_refused_for_holding_too_many_sockets_keeps_polling_and_stops_reconnecting(people, tmp_path):
    """The account already holds every socket the server allows (here one, another tab's): the
    page's socket is refused (error frame too_many_sockets, close 4429). Reconnecting would be
    refused again, and every tab doing so is a storm: the page polls and says why, and opens no
    other socket."""
    ada, _ = people
    with (
        dashboard_server(tmp_path, PRESENCE_WS_MAX_SOCKETS_PER_USER="1") as server,
        connect(server.ws_url(f"?token={auth.log_in(user=ada).access}")) as other_tab,
        chromium() as launched,
        new_page(launched) as page,
    ):
        assert '"hello"' in other_tab.recv(timeout=10)
        base_url = f"http://127.0.0.1:{server.port}"
        sign_in(page, base_url, "ada")
        page.wait_for_url(f"{base_url}/dashboard/")
        row(page, "ada").wait_for(timeout=WAIT_MS)
        badge = page.locator("#mode")
        page.wait_for_function(
            "document.getElementById('mode').title.startsWith('Too many live connections')", timeout=WAIT_MS
        )
        assert badge.get_attribute("data-mode") == "polling"
        # The backoff would have tried again within 1.25 s, and twice within 3.75 s.
        page.wait_for_timeout(4000)
        assert page.sockets == [server.ws_url()]
        assert server.output().count("event=socket_refused") == 1
        assert page.errors == []
