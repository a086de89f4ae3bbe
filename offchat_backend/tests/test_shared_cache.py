"""offchat_backend.shared_cache: the cache where it only saves work, paused after a failure."""

import logging

import pytest

from offchat_backend import shared_cache

UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


def test_a_working_cache_answers_and_keeps():
    assert shared_cache.call("set", "shared-cache-test", 7, timeout=60, purpose="test") in (None, True)
    assert shared_cache.call("get", "shared-cache-test", purpose="test") == 7


def test_a_failing_cache_answers_none_says_so_once_and_is_left_alone_until_trusted_again(settings, caplog):
    settings.CACHES = UNREACHABLE_REDIS
    caplog.set_level(logging.WARNING, logger="offchat_backend.shared_cache")

    answers = [shared_cache.call("get", "k", purpose="test") for _ in range(3)]

    assert answers == [None, None, None]
    warnings = [record.getMessage() for record in caplog.records if "test_cache_unavailable" in record.getMessage()]
    assert warnings == [f"event=test_cache_unavailable error=ConnectionError retry_in_s={shared_cache.RETRY_SECONDS}"]
    shared_cache.trust_again()
    assert shared_cache.call("get", "k", purpose="test") is None
    assert sum("test_cache_unavailable" in record.getMessage() for record in caplog.records) == 2


@pytest.mark.parametrize("method", ["get", "set", "delete", "get_many"])
def test_every_method_fails_open(settings, method):
    settings.CACHES = UNREACHABLE_REDIS
    arguments = {"get": ("k",), "set": ("k", 1), "delete": ("k",), "get_many": (["k"],)}[method]
    assert shared_cache.call(method, *arguments, purpose="test") is None
