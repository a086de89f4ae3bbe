"""The health endpoint (users.api.ops)."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from rest_framework.throttling import AnonRateThrottle

from users.services import presence
from users.tests.helpers import HEALTH, LOGIN

pytestmark = pytest.mark.django_db
WINDOW_START = "2026-03-11T12:00:05Z"


def test_health_answers_200_without_authentication_when_all_is_well(api_client):
    presence.mark_inactive_users_offline()
    response = api_client.get(HEALTH, HTTP_AUTHORIZATION="Bearer not-a-token")  # a bad token changes nothing
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker", "sweeper"}
    assert body["checks"]["sweeper"]["users_marked_offline"] == 0
    assert response["Cache-Control"] == "no-store"


def test_health_answers_503_with_the_reason_when_the_sweeper_stalled(api_client):
    presence.mark_inactive_users_offline()
    with time_machine.travel(timezone.now() + timedelta(seconds=3 * settings.PRESENCE_SWEEP_INTERVAL + 1)):
        response = api_client.get(HEALTH)
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["reasons"][0].startswith("sweeper: the last sweep completed")


def test_health_stays_200_but_degraded_when_the_cache_is_down(api_client, settings):
    presence.mark_inactive_users_offline()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    response = api_client.get(HEALTH)
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["reasons"] == ["cache: unreachable (ConnectionError)"]


def test_health_reveals_no_configuration(api_client, settings):
    presence.mark_inactive_users_offline()
    body = api_client.get(HEALTH).content.decode()
    for secret in (settings.SECRET_KEY, settings.REDIS_URL or "redis://", str(settings.DATABASES["default"]["NAME"])):
        assert secret not in body


# Inside one throttle window: the counts are per fixed minute.
@time_machine.travel(WINDOW_START, tick=False)
def test_health_is_not_throttled(api_client, monkeypatch):
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "2/min"})
    wrong = {"username": "nobody", "password": "wrong"}
    assert [api_client.post(LOGIN, wrong, format="json").status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]  # the anon limit...
    assert {api_client.get(HEALTH).status_code for _ in range(5)} == {503}  # ...but not here (never swept)
