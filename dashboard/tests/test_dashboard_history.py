"""Presence over time on the dashboard, in a real headless Chromium against daphne on the
test database: the chart of users online and away (24 hours and 7 days) shows the timeline
endpoint's points, the step so far (the live count) last and marked, and a user's panel shows
their live sessions, today's totals as the history endpoint gives them for the browser's time
zone, and a bar per day."""

from datetime import datetime, time, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from dashboard.tests.helpers import OUTPUT, WAIT_MS, chromium, dashboard_server, new_page, row, sign_in
from users.tests.factories import PASSWORD, StaffFactory, UserFactory

pytestmark = [pytest.mark.chromium, pytest.mark.django_db(transaction=True)]

# Not UTC, and half an hour off it: the browser's days are not the server's. (Not Asia/Kolkata:
# Chromium's ICU names it Asia/Calcutta.) The second when the first is near its midnight, so
# that "today" has some length and the test ends on the day it started.
BROWSER_TIME_ZONES = ("America/St_Johns", "Australia/Adelaide")


def browser_tz(now):
    for name in BROWSER_TIME_ZONES:
        local = now.astimezone(ZoneInfo(name))
        minutes = local.hour * 60 + local.minute
        if 10 <= minutes <= 24 * 60 - 10:
            return name
    raise AssertionError("both time zones near midnight")


CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)
# Markup in a user agent must show as text, and run nothing.
HOSTILE_AGENT = (
    'Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0 <img src=x onerror="window.pwned=1">'
)


def counts_at(at):
    """Users per status at a moment: a daily wave, so that the chart has a shape."""
    hour = at.hour + at.minute / 60
    online = 3 + round(5 * max(0.0, 1 - abs(hour - 14) / 8)) + at.day % 2
    away = 1 + (at.hour // 4) % 3
    return online, away, 20 - online - away


@pytest.fixture
def history():
    """ada (staff), and cleo: two live sessions and one ended, closed intervals over the
    last 7 days of the browser's time zone (one across last midnight), none still open, so that her
    totals do not move while the test reads them; counts every 5 minutes over the last day
    (less one hour: no sweep ran then) and every hour over the week before."""
    from users.models import OnlineStatus, PresenceCount, PresenceInterval, PresenceSession

    now = timezone.now()
    ada = StaffFactory(username="ada", first_name="Ada", last_name="Lovelace")
    cleo = UserFactory(
        username="cleo", first_name="Cleo", last_name="<b>Bold</b>", online_status=OnlineStatus.ONLINE,
        last_seen=now, last_active=now,
    )  # fmt: skip
    PresenceSession.objects.bulk_create(
        [
            PresenceSession(user=cleo, user_agent=CHROME_MAC, ip_address="203.0.113.7",
                            created_at=now - timedelta(hours=3), last_seen=now, last_active=now),
            PresenceSession(user=cleo, user_agent=HOSTILE_AGENT, ip_address="2001:db8::42",
                            created_at=now - timedelta(minutes=40), last_seen=now, last_active=now),
            PresenceSession(user=cleo, user_agent="curl/8.5.0", ip_address="198.51.100.9",
                            created_at=now - timedelta(days=1), last_seen=now - timedelta(hours=20),
                            ended_at=now - timedelta(hours=20), end_reason="logout"),
        ]
    )  # fmt: skip

    tz_name = browser_tz(now)
    tz = ZoneInfo(tz_name)
    midnight = datetime.combine(now.astimezone(tz).date(), time.min, tzinfo=tz)
    elapsed = now - timedelta(seconds=30) - midnight
    today = [  # (status, start, end) as fractions of the day so far
        ("online", 0.15, 0.45),
        ("away", 0.45, 0.55),
        ("online", 0.6, 0.9),
    ]
    intervals = [
        ("online", midnight - timedelta(minutes=30), midnight + elapsed * 0.1),  # across midnight
        *((status, midnight + elapsed * start, midnight + elapsed * end) for status, start, end in today),
    ]
    for days_ago in range(1, 7):
        day = midnight - timedelta(days=days_ago)
        morning = day + timedelta(hours=8, minutes=10 * days_ago)
        intervals += [
            ("online", morning, morning + timedelta(hours=2, minutes=15 * days_ago)),
            ("away", morning + timedelta(hours=2, minutes=15 * days_ago), morning + timedelta(hours=3)),
            ("online", day + timedelta(hours=14), day + timedelta(hours=15 + days_ago % 3)),
        ]
    PresenceInterval.objects.bulk_create(
        PresenceInterval(user=cleo, status=status, started_at=start, ended_at=end) for status, start, end in intervals
    )

    minute = now.replace(second=0, microsecond=0)
    five = minute - timedelta(minutes=minute.minute % 5)
    recent = [five - timedelta(minutes=5 * n) for n in range(288)]
    gap = (now - timedelta(hours=10), now - timedelta(hours=9))
    recent = [at for at in recent if not gap[0] <= at < gap[1]]
    hourly = [minute.replace(minute=0) - timedelta(hours=n) for n in range(24, 7 * 24)]
    PresenceCount.objects.bulk_create(
        PresenceCount(at=at, **dict(zip(("online", "away", "offline"), counts_at(at), strict=True)))
        for at in recent + hourly
    )
    expected_today = {
        "tz": tz_name,
        "date": midnight.date().isoformat(),
        "online_seconds": (elapsed * 0.1 + elapsed * 0.3 + elapsed * 0.3).total_seconds(),
        "away_seconds": (elapsed * 0.1).total_seconds(),
    }
    return ada, cleo, expected_today


@pytest.fixture
def asgi(tmp_path, history):
    with dashboard_server(tmp_path) as server:
        yield server


@pytest.fixture
def page(asgi, history):
    """A page in the test's time zone that also records the timeline and history requests it sends."""
    with chromium() as launched, new_page(launched, timezone_id=history[2]["tz"]) as opened:
        opened.timelines, opened.histories = [], []
        opened.on("request", lambda request: _record(opened, request.url))
        yield opened


def _record(page, url):
    path = url.split("://", 1)[1].split("/", 1)[1]
    if "/presence/timeline/" in url:
        page.timelines.append(f"/{path}")
    elif "/history/" in url:
        page.histories.append(f"/{path}")


def duration(seconds):
    """As the page writes a duration (history.js)."""
    if seconds < 60:
        return f"{int(seconds)} s"
    hours, minutes = int(seconds // 3600), int(seconds % 3600 // 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def chart_points(page):
    return page.eval_on_selector_all(
        "#chart .point",
        """points => points.map(point => ({
            at: point.dataset.at, online: Number(point.dataset.online),
            away: Number(point.dataset.away), offline: Number(point.dataset.offline),
            partial: point.dataset.partial === "true" }))""",
    )


def timeline_read(page):
    """Waits for the page's next timeline response, whose body is `.value.json()`."""
    return page.expect_response(lambda response: "/presence/timeline/" in response.url, timeout=WAIT_MS)


def check_chart_against_api(page, asgi, token, shown, *, range_, step, span, step_seconds):
    """`shown`: the timeline body the page read."""
    page.locator(f'#chart svg[data-range="{range_}"]').wait_for(timeout=WAIT_MS)
    assert page.locator("#chart-error").is_hidden(), page.inner_text("#chart-error")
    url = page.timelines[-1]
    query = parse_qs(urlsplit(url).query)
    assert query["step"] == [step]
    start, end = (datetime.fromisoformat(query[name][0]) for name in ("from", "to"))
    assert end - start == span
    assert abs(end - timezone.now()) <= timedelta(seconds=step_seconds + 60)
    assert chart_points(page) == shown["points"]  # every point, the same figures

    # What the API answers for that range, but for the step so far: its live count is the
    # request's own, and the step may have ended since.
    status, timeline = asgi.http(url, token=token)
    assert status == 200, timeline
    assert timeline["step_seconds"] == step_seconds
    assert len(timeline["points"]) > 20
    *settled, latest = shown["points"]
    assert settled == timeline["points"][: len(settled)]
    assert latest["partial"] is True  # the range ends after now: the step holding now is last
    assert not any(point["partial"] for point in settled)
    assert page.locator("#chart .point.partial").count() == 1
    assert page.get_attribute("#chart .point.partial", "data-at") == latest["at"]
    assert page.locator("#chart circle.latest.partial").count() == 2  # online and away, drawn as rings

    svg = page.locator("#chart svg")
    assert svg.get_attribute("role") == "img"
    assert svg.get_attribute("data-step-seconds") == str(step_seconds)
    description = page.text_content("#chart-desc")
    assert description.startswith("Now, this step so far, at ")
    assert f"{latest['online']} online, {latest['away']} away, {latest['offline']} offline" in description
    assert page.text_content("#chart-title").startswith("Users online and away over the last")
    assert page.locator("#chart .x-label").count() >= 6  # hours or days along the bottom
    assert page.locator("#chart .y-label").count() == 5
    assert page.locator("#chart path.line.online").get_attribute("d").count("M") >= 1


def test_the_chart_and_a_users_panel_show_what_the_api_says(history, asgi, page):
    _, cleo, expected_today = history
    base_url = f"http://127.0.0.1:{asgi.port}"
    status, tokens = asgi.http("/api/users/login/", body={"username": "ada", "password": PASSWORD})
    assert status == 200, tokens
    token = tokens["access"]

    with timeline_read(page) as first_read:
        sign_in(page, base_url, "ada")
        page.wait_for_url(f"{base_url}/dashboard/")
    row(page, "cleo").locator(".status-text", has_text="online").wait_for(timeout=WAIT_MS)
    OUTPUT.mkdir(parents=True, exist_ok=True)

    # The chart: the last 24 hours by 5 minutes, then the last 7 days by the hour.
    day = first_read.value.json()
    check_chart_against_api(page, asgi, token, day, range_="24h", step="5m", span=timedelta(days=1), step_seconds=300)
    # The hour no sweep ran is a break in the line, not a slope across it.
    assert page.locator("#chart path.line.online").get_attribute("d").count("M") == 2
    assert len(day["points"]) == 288 - 12 or len(day["points"]) == 288 - 13
    assert page.get_attribute('.range button[data-range="24h"]', "aria-pressed") == "true"
    page.locator("#chart").screenshot(path=str(OUTPUT / "dashboard-history-chart-only.png"))
    page.screenshot(path=str(OUTPUT / "dashboard-history-chart.png"), full_page=True)

    with timeline_read(page) as week_read:
        page.click('.range button[data-range="7d"]')
    week = week_read.value.json()
    check_chart_against_api(page, asgi, token, week, range_="7d", step="1h", span=timedelta(days=7), step_seconds=3600)
    assert page.get_attribute('.range button[data-range="7d"]', "aria-pressed") == "true"
    assert page.get_attribute('.range button[data-range="24h"]', "aria-pressed") == "false"
    page.screenshot(path=str(OUTPUT / "dashboard-history-chart-7d.png"), full_page=True)

    # The panel, from the keyboard: focus cleo's row, Enter.
    row(page, "cleo").focus()
    page.keyboard.press("Enter")
    panel = page.locator("#user-panel")
    page.locator('#user-panel[data-state="loaded"]').wait_for(timeout=WAIT_MS)
    assert page.evaluate("document.getElementById('user-panel').open")
    assert panel.get_attribute("data-user-id") == str(cleo.pk)
    assert page.inner_text("#panel-name") == "cleo"
    assert page.inner_text("#panel-sub") == "Cleo <b>Bold</b> · online"  # text, not markup

    # Today, in the browser's time zone, as the API totals it.
    history_url = page.histories[-1]
    assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == expected_today["tz"]
    assert parse_qs(urlsplit(history_url).query)["tz"] == [expected_today["tz"]]
    status, body = asgi.http(history_url, token=token)
    assert status == 200, body
    assert body["tz"] == expected_today["tz"]
    api_today = next(day for day in body["days"] if day["date"] == expected_today["date"])
    online, away = page.locator("#panel-today-online"), page.locator("#panel-today-away")
    assert page.get_attribute("#user-panel dl.today", "data-date") == expected_today["date"]
    assert float(online.get_attribute("data-seconds")) == api_today["online_seconds"]
    assert float(away.get_attribute("data-seconds")) == api_today["away_seconds"]
    assert online.inner_text() == duration(api_today["online_seconds"])
    assert away.inner_text() == duration(api_today["away_seconds"])
    # ...which is what was recorded: the piece after midnight of the interval across it counts.
    assert api_today["online_seconds"] == pytest.approx(expected_today["online_seconds"], abs=1)
    assert api_today["away_seconds"] == pytest.approx(expected_today["away_seconds"], abs=1)

    # Seven days, one bar each, a segment per interval (or piece of one) that day.
    days = page.locator("#panel-week li.day")
    assert days.count() == 7
    assert [days.nth(n).get_attribute("data-date") for n in range(7)] == [day["date"] for day in body["days"]]
    today_bar = page.locator(f'#panel-week li.day[data-date="{expected_today["date"]}"]')
    assert today_bar.locator(".segment.online").count() == 3
    assert today_bar.locator(".segment.away").count() == 1
    yesterday = days.nth(5)
    assert yesterday.locator(".segment").count() == 4  # three intervals, and the one across midnight
    for n, day in enumerate(body["days"]):
        assert float(days.nth(n).get_attribute("data-online-seconds")) == day["online_seconds"]
        assert f"online {duration(day['online_seconds'])}" in days.nth(n).get_attribute("aria-label")

    # Live sessions only, newest first, user agents as text.
    sessions = page.locator("#panel-sessions li.session")
    assert sessions.count() == 2
    assert page.inner_text("#panel-session-count") == "(2)"
    assert sessions.nth(0).locator(".device").inner_text() == "Firefox on Android"
    assert sessions.nth(0).locator(".address").inner_text() == "2001:db8::42"
    assert sessions.nth(0).locator(".agent").inner_text() == HOSTILE_AGENT
    assert sessions.nth(1).locator(".device").inner_text() == "Chrome on macOS"
    assert sessions.nth(1).locator(".address").inner_text() == "203.0.113.7"
    assert "since" in sessions.nth(1).locator(".since").inner_text()
    assert "3 h ago" in sessions.nth(1).locator(".since").inner_text()
    assert "198.51.100.9" not in page.inner_text("#user-panel")  # the ended one
    assert page.locator("#user-panel img").count() == 0
    assert page.evaluate("window.pwned") is None
    page.screenshot(path=str(OUTPUT / "dashboard-user-panel.png"))  # the viewport: the drawer's height

    # A push about cleo reads her panel again; the chart is not read again for it.
    status, body = asgi.http(
        f"/api/users/admin/users/{cleo.pk}/set-online-status/", body={"online_status": "away"}, token=token
    )
    assert status == 200, body
    row(page, "cleo").locator(".status-text", has_text="away").wait_for(timeout=WAIT_MS)
    page.locator('#user-panel[data-state="loaded"][data-loads="2"]').wait_for(timeout=WAIT_MS)
    assert page.inner_text("#panel-sub") == "Cleo <b>Bold</b> · away"
    assert len(page.histories) == 2
    assert len(page.timelines) == 2

    # Escape closes it, and the focus is back on the row.
    page.keyboard.press("Escape")
    page.wait_for_function("!document.getElementById('user-panel').open", timeout=WAIT_MS)
    assert page.evaluate("document.activeElement.dataset.username") == "cleo"

    # A click opens another user's; the close button closes it.
    row(page, "ada").locator(".name").click()
    page.locator(f'#user-panel[data-state="loaded"][data-user-id="{history[0].pk}"]').wait_for(timeout=WAIT_MS)
    assert page.inner_text("#panel-name") == "ada"
    assert page.locator("#panel-sessions li.session").count() >= 1  # the browser's own, and the test's login
    page.click("#panel-close")
    page.wait_for_function("!document.getElementById('user-panel').open", timeout=WAIT_MS)

    # Light: one timeline read per period shown, none for the pushes meanwhile.
    assert len(page.timelines) == 2
    assert page.errors == []
