import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from users.models import OnlineStatus, PresenceSession, User
from users.services import presence
from users.tests.factories import UserFactory
from users.tests.helpers import ALL_USERS, client_for

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


def stored_presence(user):
    session = PresenceSession.objects.get(user=user)
    return User.objects.get(pk=user.pk).last_seen, session.last_seen, session.last_active


def presence_updates(queries):
    return [q["sql"] for q in queries if q["sql"].startswith('UPDATE "users"')]


def test_a_jwt_authenticated_get_to_a_non_presence_endpoint_counts_as_activity():
    user = UserFactory()
    with time_machine.travel(NOW - timedelta(minutes=10), tick=False):
        client = client_for(user)
    presence.mark_inactive_users_offline(now=NOW)
    with time_machine.travel(NOW, tick=False):
        response = client.get(ALL_USERS)
    assert response.status_code == 200
    user.refresh_from_db()
    assert (user.online_status, user.last_seen) == (OnlineStatus.ONLINE, NOW)


def test_the_view_runs_before_the_activity_is_written():
    """The listing was built while the caller was still offline: the write came after the view."""
    user = UserFactory()
    client = client_for(user)
    presence.mark_inactive_users_offline(now=timezone.now() + timedelta(hours=1))  # the session idles out
    rows = client.get(ALL_USERS).json()["results"]
    assert rows[0]["online_status"] == "offline"
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.ONLINE


def test_a_failed_request_by_an_authenticated_user_still_counts():
    user = UserFactory()
    assert client_for(user).get("/api/users/admin/users/").status_code == 403
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.ONLINE


def test_anonymous_and_badly_authenticated_requests_write_nothing(api_client):
    user = UserFactory()
    with CaptureQueriesContext(connection) as queries:
        api_client.get(ALL_USERS)
        api_client.credentials(HTTP_AUTHORIZATION="Bearer forged")
        api_client.get(ALL_USERS)
    assert presence_updates(queries) == []
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.OFFLINE


def test_requests_between_heartbeats_write_nothing_and_heartbeats_write_at_the_granularity(settings):
    """A client that heartbeats every 30 s and calls the API every second: 2 writes a minute."""
    settings.PRESENCE_WRITE_GRANULARITY = 25
    settings.PRESENCE_HEARTBEAT_INTERVAL = 30
    user = UserFactory()
    with time_machine.travel(NOW, tick=False) as clock:
        client = client_for(user)
        with CaptureQueriesContext(connection) as queries:
            for second in range(1, 61):
                clock.shift(1)
                if second % 30 == 0:
                    client.post("/api/users/heartbeat/", format="json")
                client.get(ALL_USERS)
    assert len(presence_updates(queries)) == 2  # one users-row write per heartbeat, none for the 60 GETs
    assert User.objects.get(pk=user.pk).last_seen == NOW + timedelta(seconds=60)


def test_requests_alone_keep_a_client_online_with_a_write_every_granularity_plus_interval(settings):
    settings.PRESENCE_WRITE_GRANULARITY = 25
    settings.PRESENCE_HEARTBEAT_INTERVAL = 30
    user = UserFactory()
    with time_machine.travel(NOW, tick=False) as clock:
        client = client_for(user)
        for _ in range(9):
            clock.shift(6)  # 54 s of requests: within 25 + 30 s, nothing written
            client.get(ALL_USERS)
        assert User.objects.get(pk=user.pk).last_seen == NOW
        clock.shift(1)
        client.get(ALL_USERS)
    assert User.objects.get(pk=user.pk).last_seen == NOW + timedelta(seconds=55)


def test_django_admin_pages_are_no_chat_client_and_count_for_nothing(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/admin/").status_code == 200
    assert presence_updates(queries) == []
    staff.refresh_from_db()
    assert staff.online_status == OnlineStatus.OFFLINE


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failed_presence_write_is_logged_and_the_response_still_served(caplog):
    """A row locked elsewhere plus a short lock_timeout: PostgreSQL refuses the activity write."""
    user = UserFactory()
    with time_machine.travel(NOW - timedelta(minutes=10), tick=False):
        client = client_for(user)
    before = stored_presence(user)
    locked, release = threading.Event(), threading.Event()

    def hold_row_lock():
        try:
            with transaction.atomic():
                User.objects.select_for_update().get(pk=user.pk)
                locked.set()
                release.wait(timeout=10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_row_lock)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        with caplog.at_level("ERROR", logger="users.api.middleware"):
            response = client.get(ALL_USERS)
    finally:
        release.set()
        holder.join(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    assert response.status_code == 200
    assert f"event=activity_write_failed user_id={user.pk}" in caplog.text
    assert "lock timeout" in caplog.text
    assert stored_presence(user) == before  # nothing half-written: the session's write rolled back too


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_requests_activity_is_deferred_past_its_answer_and_lands_at_the_flush(deferred_activity):
    user = UserFactory()
    # Past a request's write granularity (granularity + a heartbeat interval, 55 s), within the
    # feed's margin of the timeout (60 s): later, the write would take the transactional path.
    with time_machine.travel(timezone.now() - timedelta(seconds=57)):
        client = client_for(user)
    before = stored_presence(user)

    with CaptureQueriesContext(connection) as queries:
        assert client.get(ALL_USERS).status_code == 200

    assert presence_updates(queries) == []
    assert stored_presence(user) == before
    assert presence.write_deferred_activity() == 1
    user_last_seen, session_last_seen, session_last_active = stored_presence(user)
    assert user_last_seen == session_last_seen == session_last_active > before[0]
