from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from offchat_backend.tests.support import free_port
from users.ops.health import DEGRADED, OK, UNAVAILABLE, system_health
from users.services import presence

pytestmark = pytest.mark.django_db


@pytest.fixture
def swept_just_now():
    presence.mark_inactive_users_offline()


def closed_redis_url():
    """A Redis URL nobody answers at: a service that is down, for real."""
    return f"redis://127.0.0.1:{free_port()}/0"


def test_all_well_after_a_recent_sweep(swept_just_now):
    health = system_health()
    assert health.status == OK
    assert health.reasons == []
    sweeper = health.checks["sweeper"].details
    assert sweeper["users_marked_offline"] == 0
    assert sweeper["age_seconds"] < 5


def test_never_swept_is_unavailable_and_says_why():
    health = system_health()
    assert health.status == UNAVAILABLE
    assert health.reasons == ["sweeper: no sweep has completed yet: is a Celery worker with beat running?"]


def test_a_sweep_older_than_three_intervals_is_unavailable(settings, swept_just_now):
    limit = 3 * settings.PRESENCE_SWEEP_INTERVAL
    with time_machine.travel(timezone.now() + timedelta(seconds=limit - 5)):
        assert system_health().status == OK
    with time_machine.travel(timezone.now() + timedelta(seconds=limit + 5)):
        health = system_health()
    assert health.status == UNAVAILABLE
    assert "is beat or every worker down?" in health.checks["sweeper"].reason


def test_the_sweeper_reports_what_its_last_run_changed(user, swept_just_now):
    presence.start_session(user=user, at=timezone.now() - timedelta(hours=1))
    presence.mark_inactive_users_offline()
    details = system_health().checks["sweeper"].details
    assert (details["users_marked_offline"], details["sessions_ended"]) == (1, 1)


def test_a_cache_that_is_down_degrades_without_failing(settings, swept_just_now):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": closed_redis_url()}
    }
    health = system_health()
    assert health.status == DEGRADED
    assert not health.checks["cache"].ok
    assert health.checks["cache"].reason == "unreachable (ConnectionError)"
    assert health.checks["database"].ok and health.checks["sweeper"].ok


def test_a_broker_that_is_down_degrades_without_failing(settings, swept_just_now):
    settings.CELERY_BROKER_URL = closed_redis_url()
    health = system_health()
    assert health.status == DEGRADED
    assert health.checks["broker"].reason.startswith("unreachable")


@pytest.mark.redis
def test_a_real_redis_is_a_healthy_cache_and_broker(settings, swept_just_now):
    settings.CELERY_BROKER_URL = settings.REDIS_URL
    health = system_health()
    assert health.checks["cache"].as_dict() == {"ok": True, "backend": "RedisCache"}
    assert health.checks["broker"].as_dict() == {"ok": True, "transport": "redis"}
