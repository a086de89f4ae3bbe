"""Throttles: login per address and per username, heartbeats per user, counted in the shared
cache, and letting requests through (not failing them) while the cache is down."""

import shutil
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import time_machine
from django.core.cache.backends.locmem import LocMemCache
from django.utils import timezone
from redis.client import Pipeline
from redis.connection import Connection
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import ScopedRateThrottle

from conftest import skip_for_missing_service
from offchat_backend.tests.support import PrivateRedis, free_port
from users.api import throttling
from users.models import OnlineStatus, User
from users.services import presence
from users.tests.factories import PASSWORD, UserFactory
from users.tests.helpers import HEALTH, HEARTBEAT, LOGIN, client_for, client_with_token, log_in

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
# The start of a one-minute window: windows are counted from the epoch, in whole minutes here.
MINUTE = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)


def assert_throttled(response):
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/json"
    assert "throttled" in response.json()["detail"]
    assert int(response["Retry-After"]) > 0


def heartbeat_window_key(user, at, *, seconds=60):
    """The throttle's cache key (before KEY_PREFIX and VERSION) for `user`'s heartbeats at `at`."""
    return f"throttle:heartbeat:{user.pk}:{int(at.timestamp() // seconds)}"


def redis_cache(url):
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }


# --- Login ----------------------------------------------------------------------------
@time_machine.travel(NOW, tick=False)
def test_guessing_one_password_from_many_addresses_meets_the_per_username_limit(api_client, user, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login_username", "3/min")
    # Varied case counts against the same account.
    for address, name in zip(
        ("10.0.0.1", "10.0.0.2", "10.0.0.3"), (user.username, user.username.upper(), user.username), strict=False
    ):
        assert log_in(api_client, name, "wrong", address).status_code == 401

    assert_throttled(log_in(api_client, user.username, PASSWORD, "10.0.0.4"))
    assert User.objects.get(pk=user.pk).online_status == OnlineStatus.OFFLINE

    # Other accounts, from the same addresses, are not held back.
    other = UserFactory()
    assert log_in(api_client, other.username, PASSWORD, "10.0.0.4").status_code == 200

    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        assert log_in(api_client, user.username, PASSWORD, "10.0.0.4").status_code == 200


@time_machine.travel(NOW, tick=False)
def test_one_address_trying_many_usernames_meets_the_per_address_limit(api_client, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login", "3/min")
    for number in range(3):
        assert log_in(api_client, f"guess{number}", "wrong", "10.0.0.1").status_code == 401
    assert_throttled(log_in(api_client, "guess9", "wrong", "10.0.0.1"))
    assert log_in(api_client, "guess9", "wrong", "10.0.0.2").status_code == 401


def test_unknown_user_and_wrong_password_get_the_same_answer(api_client, user):
    unknown = log_in(api_client, "nobody-by-this-name", PASSWORD, "10.0.0.1")
    wrong = log_in(api_client, user.username, "wrong-password", "10.0.0.2")
    assert (unknown.status_code, unknown.json(), unknown["WWW-Authenticate"]) == (
        wrong.status_code,
        wrong.json(),
        wrong["WWW-Authenticate"],
    )
    assert sorted(unknown.headers) == sorted(wrong.headers)


def test_a_login_body_without_a_username_is_a_400_not_a_throttle_error(api_client):
    for body in ({}, {"username": {"a": 1}, "password": "x"}, {"username": ["a"], "password": "x"}):
        response = api_client.post(LOGIN, body, format="json")
        assert response.status_code == 400, response.content


# --- Heartbeats -----------------------------------------------------------------------
@time_machine.travel(NOW, tick=False)
def test_a_client_pinging_in_a_loop_is_cut_off_without_harming_anyone_else(user, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "10/min")
    runaway, neighbour = client_for(user), client_for(UserFactory())

    codes = []
    for ping in range(100):
        codes.append(runaway.post(HEARTBEAT).status_code)
        if ping % 25 == 0:
            assert neighbour.post(HEARTBEAT).status_code == 200
    assert codes == [200] * 10 + [429] * 90
    assert_throttled(runaway.post(HEARTBEAT))
    # Cut off, not thrown out: the runaway user is still online, and back after the window.
    assert User.objects.get(pk=user.pk).online_status == OnlineStatus.ONLINE
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        assert runaway.post(HEARTBEAT).status_code == 200


@time_machine.travel(NOW, tick=False)
def test_the_heartbeat_limit_is_per_user_across_their_devices(user, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "4/min")
    phone, laptop = client_for(user), client_for(user)
    assert [device.post(HEARTBEAT).status_code for device in (phone, laptop, phone, laptop, phone)] == [200] * 4 + [429]


@time_machine.travel(NOW, tick=False)
def test_heartbeats_count_against_their_own_limit_only(user, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "user", "2/min")
    client = client_for(user)
    assert [client.post(HEARTBEAT).status_code for _ in range(5)] == [200] * 5
    # Other requests still meet the general per-user limit.
    assert [client.get("/api/users/me/").status_code for _ in range(3)] == [200, 200, 429]


def test_the_default_heartbeat_limit_leaves_room_for_several_devices(settings):
    rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["heartbeat"]
    allowed, period = ScopedRateThrottle().parse_rate(rate)
    per_device = period / settings.PRESENCE_HEARTBEAT_INTERVAL
    assert allowed >= 10 * per_device


@pytest.mark.redis
def test_throttle_counters_live_in_redis_where_every_worker_sees_them(api_client, user, monkeypatch):
    from django.core.cache import cache

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login_username", "2/min")
    log_in(api_client, user.username, "wrong", "10.0.0.1")
    keys = {key.decode() for key in cache._cache.get_client().keys("*throttle:login_username:*")}
    assert len(keys) == 1
    # A second process would read the same key: here, a new connection from scratch.
    cache.close()
    log_in(api_client, user.username, "wrong", "10.0.0.2")
    assert_throttled(log_in(api_client, user.username, PASSWORD, "10.0.0.3"))


# --- Counting: a fixed window, one round trip ---------------------------------------------
@pytest.fixture(params=["locmem", pytest.param("redis", marks=pytest.mark.redis)])
def counting_cache(request, settings):
    """Both ways of counting: Django's cache API (LocMem, a run without services) and a Redis pipeline."""
    from django.core.cache import cache

    if request.param == "redis":
        settings.CACHES = redis_cache(settings.REDIS_URL)
    else:
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    cache.clear()
    return request.param


def test_a_refused_request_is_told_to_retry_when_its_window_ends(counting_cache, user, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    with time_machine.travel(MINUTE + timedelta(seconds=17), tick=False):
        client = client_for(user)
        assert [client.post(HEARTBEAT).status_code for _ in range(3)] == [200] * 3
        refused = client.post(HEARTBEAT)
    assert_throttled(refused)
    assert refused["Retry-After"] == "43"
    assert refused.json()["detail"] == "Request was throttled. Expected available in 43 seconds."

    with time_machine.travel(MINUTE + timedelta(seconds=59.5), tick=False):
        refused = client.post(HEARTBEAT)
    assert_throttled(refused)
    assert refused["Retry-After"] == "1"  # half a second left, but never "retry in 0"

    with time_machine.travel(MINUTE + timedelta(seconds=60), tick=False):
        assert [client.post(HEARTBEAT).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_a_fixed_window_lets_twice_the_rate_through_across_its_boundary(counting_cache, user, monkeypatch):
    """The tradeoff of fixed windows (users.api.throttling), pinned down: the limit at the end
    of one window, and again at the start of the next."""
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    with time_machine.travel(MINUTE + timedelta(seconds=59), tick=False):
        client = client_for(user)
        codes = [client.post(HEARTBEAT).status_code for _ in range(4)]
    with time_machine.travel(MINUTE + timedelta(seconds=60), tick=False):
        codes += [client.post(HEARTBEAT).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429] * 2


@pytest.mark.redis
@time_machine.travel(MINUTE + timedelta(seconds=10), tick=False)
def test_a_throttle_check_is_one_round_trip_to_redis(user, monkeypatch):
    from django.core.cache import cache

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    request = Request(APIRequestFactory().post(HEARTBEAT))
    request.user = user
    heartbeat_view = SimpleNamespace(throttle_scope="heartbeat")
    # The first check also opens the pool's connection (HELLO, SELECT): not what is measured.
    assert throttling.ScopedRateThrottle().allow_request(request, heartbeat_view)

    sent = []
    send = Connection.send_packed_command

    def recording_send(connection, command, *args, **kwargs):
        chunks = command if isinstance(command, list) else [command]
        sent.append(b"".join(bytes(chunk) for chunk in chunks))
        return send(connection, command, *args, **kwargs)

    with monkeypatch.context() as spying:
        spying.setattr(Connection, "send_packed_command", recording_send)
        allowed = [throttling.ScopedRateThrottle().allow_request(request, heartbeat_view) for _ in range(3)]

    assert allowed == [True, True, False]
    assert len(sent) == 3  # one write to the socket (and one reply) per check
    assert all(b"INCR" in payload and b"EXPIRE" in payload and b"NX" in payload for payload in sent)
    key = cache.make_key(heartbeat_window_key(user, MINUTE))
    redis_client = cache._cache.get_client(key)
    assert int(redis_client.get(key)) == 4
    assert 0 < redis_client.ttl(key) <= 60


@pytest.mark.redis
@time_machine.travel(MINUTE + timedelta(seconds=10), tick=False)
def test_an_error_reply_from_redis_lets_the_request_through(user, caplog):
    """Not only a lost connection: a Redis that answers with an error (READONLY after a
    failover, OOM under maxmemory) fails open too."""
    from django.core.cache import cache

    client = client_for(user)
    key = cache.make_key(heartbeat_window_key(user, MINUTE))
    cache._cache.get_client(key, write=True).set(key, "not a counter")

    assert client.post(HEARTBEAT).status_code == 200
    warnings = [record.getMessage() for record in caplog.records if "throttle_cache_unavailable" in record.getMessage()]
    assert len(warnings) == 1 and "error=ResponseError" in warnings[0], warnings


@pytest.mark.redis
def test_a_bug_while_counting_is_an_error_not_a_free_pass(user, monkeypatch):
    def broken_execute(pipeline, *args, **kwargs):
        raise TypeError("a bug, not Redis")

    client = client_for(user)
    monkeypatch.setattr(Pipeline, "execute", broken_execute)
    with pytest.raises(TypeError, match="a bug"):
        client.post(HEARTBEAT)


def test_a_counter_gone_between_add_and_incr_counts_the_request_again():
    class EvictingAfterAdd(LocMemCache):
        def add(self, key, value, timeout=None, version=None):
            return False  # as if the key were there, then gone by the incr

    cache = EvictingAfterAdd("evicting", {})
    assert throttling.count_request_in_window(cache=cache, key="throttle:t:1:0", window_seconds=60) == 1
    assert cache.get("throttle:t:1:0") == 1
    assert throttling.count_request_in_window(cache=cache, key="throttle:t:1:0", window_seconds=60) == 2


# --- The heartbeat's limit, counted in batches ------------------------------------------
@pytest.fixture
def batched_counts(settings, monkeypatch):
    """This process's heartbeat counts, added to the cache only when the test says (send_now)."""
    settings.THROTTLE_HEARTBEAT_BATCH_INTERVAL = 60  # the thread would wait a minute
    counts = throttling.BatchedWindowCounts()
    monkeypatch.setattr(throttling, "BATCHED_COUNTS", counts)
    yield counts
    counts.close()


@time_machine.travel(MINUTE + timedelta(seconds=10), tick=False)
def test_one_process_refuses_a_loop_at_once_and_adds_its_count_later(counting_cache, batched_counts, user, monkeypatch):
    from django.core.cache import cache

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    client = client_for(user)
    codes = [client.post(HEARTBEAT).status_code for _ in range(5)]

    assert codes == [200, 200, 200, 429, 429]
    key = heartbeat_window_key(user, MINUTE)
    assert cache.get(key) is None  # nothing sent yet: no round trip in the requests
    batched_counts.send_now()
    assert cache.get(key) == 5  # the refused ones too: a loop that keeps calling stays refused
    batched_counts.send_now()
    assert cache.get(key) == 5  # each request is added once


@time_machine.travel(MINUTE + timedelta(seconds=10), tick=False)
def test_other_processes_requests_refuse_this_one_s_after_its_next_addition(
    counting_cache, batched_counts, user, monkeypatch
):
    """The tradeoff (users.api.throttling), pinned down: a client spread over processes is
    refused once this process has heard the shared count, not before."""
    from django.core.cache import cache

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    key = heartbeat_window_key(user, MINUTE)
    throttling.add_to_windows(cache=cache, additions=[(key, 3, 60)])  # other workers' three
    client = client_for(user)

    assert client.post(HEARTBEAT).status_code == 200  # this process has not heard of them
    batched_counts.send_now()
    assert cache.get(key) == 4
    assert_throttled(client.post(HEARTBEAT))


def test_a_new_window_counts_from_zero_and_ended_ones_are_forgotten(counting_cache, batched_counts, user, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    client = client_for(user)
    with time_machine.travel(MINUTE + timedelta(seconds=59), tick=False):
        assert [client.post(HEARTBEAT).status_code for _ in range(4)] == [200, 200, 200, 429]
    with time_machine.travel(MINUTE + timedelta(seconds=60), tick=False):
        assert [client.post(HEARTBEAT).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert len(batched_counts) == 2
        batched_counts.send_now()
        assert len(batched_counts) == 1  # the ended window, once sent, is not kept


@pytest.mark.redis
def test_the_thread_adds_the_counts_within_the_interval(settings, batched_counts, user, monkeypatch):
    from django.core.cache import cache

    settings.THROTTLE_HEARTBEAT_BATCH_INTERVAL = 0.2
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "1000/hour")  # an hour: no window ends
    client = client_for(user)
    assert [client.post(HEARTBEAT).status_code for _ in range(2)] == [200, 200]
    key = cache.make_key(heartbeat_window_key(user, timezone.now(), seconds=3600))
    redis_client = cache._cache.get_client(key)
    deadline = time.monotonic() + 10  # 50 intervals: liveness only
    while redis_client.get(key) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(redis_client.get(key)) == 2


def test_a_failed_addition_is_logged_and_its_requests_go_uncounted(settings, batched_counts, user, monkeypatch, caplog):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "2/min")
    client = client_for(user)
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{free_port()}/0")
    assert [client.post(HEARTBEAT).status_code for _ in range(2)] == [200, 200]

    batched_counts.send_now()  # raises nothing: the thread lives on

    warnings = [record.getMessage() for record in caplog.records if "throttle_cache_unavailable" in record.getMessage()]
    assert len(warnings) == 1 and "error=ConnectionError" in warnings[0], warnings
    assert client.post(HEARTBEAT).status_code == 200  # at the limit, but failing open


@time_machine.travel(MINUTE + timedelta(seconds=10), tick=False)
def test_once_the_process_is_exiting_each_request_is_counted_as_it_comes(
    counting_cache, batched_counts, user, monkeypatch
):
    from django.core.cache import cache

    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    client = client_for(user)
    assert client.post(HEARTBEAT).status_code == 200
    batched_counts.close()  # atexit: what is unsent is sent
    key = heartbeat_window_key(user, MINUTE)
    assert cache.get(key) == 1
    assert client.post(HEARTBEAT).status_code == 200
    assert cache.get(key) == 2  # no thread left to send it later


def test_only_the_heartbeat_is_counted_in_batches(settings, batched_counts, user, api_client, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login_username", "2/min")
    client = client_for(user)
    client.post(HEARTBEAT)
    log_in(api_client, user.username, "wrong", "10.0.0.1")
    assert len(batched_counts) == 1  # the heartbeat's window; login is counted in the cache at once
    settings.THROTTLE_HEARTBEAT_BATCH_INTERVAL = 0
    client.post(HEARTBEAT)
    assert len(batched_counts) == 1


# --- The cache down -------------------------------------------------------------------
def test_an_unreachable_cache_lets_requests_through_and_is_left_alone_for_a_while(
    settings, user, api_client, monkeypatch, caplog
):
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "1/min")
    client = client_for(user)

    assert [client.post(HEARTBEAT).status_code for _ in range(3)] == [200, 200, 200]
    assert log_in(api_client, user.username, PASSWORD, "10.0.0.1").status_code == 200
    warnings = [record.getMessage() for record in caplog.records if "throttle_cache_unavailable" in record.getMessage()]
    assert len(warnings) == 1, warnings  # one failure, then the cache is not tried again at once
    assert "error=ConnectionError" in warnings[0]


def test_a_bad_request_body_is_still_a_400_while_the_cache_is_down(settings, api_client):
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{free_port()}/0")
    response = api_client.post(LOGIN, "{broken", content_type="application/json")
    assert response.status_code == 400


@pytest.fixture
def private_redis(tmp_path):
    if not shutil.which("redis-server"):
        skip_for_missing_service("needs redis-server (apt-get install redis-server)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.drill
@time_machine.travel(NOW, tick=False)
def test_drill_redis_down_then_back(private_redis, settings, user, api_client, monkeypatch):
    """docs/reliability.md, drill 1: a real redis-server as cache and broker, killed and
    restarted under a running app. Nothing fails while it is down; throttling and health
    come back on their own."""
    settings.CACHES = redis_cache(private_redis.url)
    settings.CELERY_BROKER_URL = private_redis.url
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "heartbeat", "3/min")
    monkeypatch.setattr(throttling, "CACHE_RETRY_SECONDS", 0.0)
    presence.mark_inactive_users_offline()
    client, staff_client = client_for(user), client_for(UserFactory(is_staff=True))

    # Up: the throttle counts in Redis.
    assert [client.post(HEARTBEAT).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert api_client.get(HEALTH).json()["status"] == "ok"

    private_redis.stop()
    other = UserFactory()
    down = {
        "login": log_in(api_client, other.username, PASSWORD, "10.0.0.1"),
        "heartbeat": client.post(HEARTBEAT),  # over its limit, but nothing can count it now
        "directory": client.get("/api/users/all-users/"),
        "admin list": staff_client.get("/api/users/admin/users/"),
        "online": staff_client.get("/api/users/admin/users/online/"),
        "my presence": client.put("/api/users/me/presence/", {"status": "away"}, format="json"),
    }
    assert {name: response.status_code for name, response in down.items()} == dict.fromkeys(down, 200)
    tokens = down["login"].json()
    logout = client_with_token(tokens["access"]).post(
        "/api/users/logout/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert logout.status_code == 200
    health = api_client.get(HEALTH)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert {reason.split(":")[0] for reason in health.json()["reasons"]} == {"cache", "broker"}
    assert User.objects.get(pk=other.pk).online_status == OnlineStatus.OFFLINE

    # Back, empty (no persistence), on the same address: no restart of anything else.
    private_redis.start()
    assert api_client.get(HEALTH).json()["status"] == "ok"
    assert [client.post(HEARTBEAT).status_code for _ in range(4)] == [200, 200, 200, 429]
    print(
        f"\ndrill 1: Redis down: {len(down) + 1} API calls all 200, health {health.json()['status']} "
        f"({'; '.join(health.json()['reasons'])}); back: health ok, throttling counts again"
    )
