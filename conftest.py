"""Service-backed tests: run where the service is configured, skip with the reason where it
is not, and fail instead of skipping when OFFCHAT_REQUIRE_SERVICES=1 (CI sets it)."""

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("OFFCHAT_CHROMIUM", "/usr/bin/chromium"))

REQUIRE_SERVICES = os.environ.get("OFFCHAT_REQUIRE_SERVICES") == "1"


def _missing_services(item):
    from django.conf import settings
    from django.db import connection

    missing = []
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        missing.append("PostgreSQL (set DATABASE_URL=postgres://user@host:5432/name)")
    if item.get_closest_marker("redis") and not settings.REDIS_URL:
        missing.append("Redis (set REDIS_URL=redis://host:6379/15)")
    if item.get_closest_marker("chromium") and not CHROMIUM.exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium, or set OFFCHAT_CHROMIUM)")
    return missing


def pytest_report_header(config):
    from django.conf import settings

    database = settings.DATABASES["default"]
    return (
        f"offchat: database={database['ENGINE'].rsplit('.', 1)[-1]}:{database['NAME']} "
        f"redis={settings.REDIS_URL or 'none'} require_services={REQUIRE_SERVICES}"
    )


def pytest_runtest_setup(item):
    missing = _missing_services(item)
    if missing:
        skip_for_missing_service("needs " + " and ".join(missing))


def skip_for_missing_service(reason):
    """Skip, saying what is missing; fail instead under OFFCHAT_REQUIRE_SERVICES=1 (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}, and OFFCHAT_REQUIRE_SERVICES=1 forbids skipping it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    """Throttle counters and the change feed's read of the clock's crossings live in the
    cache; each test starts with none (and no process copy of the latter: the database rolls
    back under it), and with the throttles and offchat_backend.shared_cache trusting the
    cache again (both pause after a cache failure)."""
    from django.core.cache import cache

    from offchat_backend import shared_cache
    from users.api import throttling
    from users.selectors import feed

    monkeypatch.setattr(throttling, "_cache_unavailable_until", 0.0)
    shared_cache.trust_again()
    cache.clear()
    feed.forget_clock_crossings()
    yield
