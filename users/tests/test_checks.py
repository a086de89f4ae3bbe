import pytest

from users.checks import check_presence_settings, check_throttle_settings


def ids(problems):
    return [problem.id for problem in problems]


def test_default_presence_settings_pass(settings):
    assert check_presence_settings(None) == []


def test_a_timeout_not_longer_than_the_heartbeat_is_an_error(settings):
    settings.PRESENCE_INACTIVITY_TIMEOUT = settings.PRESENCE_HEARTBEAT_INTERVAL
    assert ids(check_presence_settings(None)) == ["users.E002"]


def test_non_positive_intervals_are_an_error(settings):
    settings.PRESENCE_SWEEP_INTERVAL = 0
    assert ids(check_presence_settings(None)) == ["users.E001"]


def test_a_write_granularity_not_below_the_heartbeat_is_a_warning(settings):
    settings.PRESENCE_WRITE_GRANULARITY = settings.PRESENCE_HEARTBEAT_INTERVAL
    assert ids(check_presence_settings(None)) == ["users.W001"]


def test_requests_that_would_write_too_rarely_for_the_timeout_are_a_warning(settings):
    settings.PRESENCE_HEARTBEAT_INTERVAL, settings.PRESENCE_WRITE_GRANULARITY = 30, 25
    settings.PRESENCE_INACTIVITY_TIMEOUT = 50  # a request-only client writes every 55 s
    assert ids(check_presence_settings(None)) == ["users.W002"]


@pytest.mark.parametrize("seconds", [-1, 60, 600])
def test_a_write_batch_interval_outside_the_transition_margin_is_an_error(settings, seconds):
    settings.PRESENCE_WRITE_BATCH_INTERVAL = seconds  # the margin: half of the 120 s timeout
    assert ids(check_presence_settings(None)) == ["users.E003"]


def test_production_s_write_batch_interval_passes(settings):
    settings.PRESENCE_WRITE_BATCH_INTERVAL = 1.0
    assert check_presence_settings(None) == []


@pytest.mark.parametrize("seconds", [-0.5, 10.5, 60])
def test_a_throttle_batch_interval_outside_its_bounds_is_an_error(settings, seconds):
    settings.THROTTLE_HEARTBEAT_BATCH_INTERVAL = seconds
    assert ids(check_throttle_settings(None)) == ["users.E004"]


@pytest.mark.parametrize("seconds", [0, 1.0, 10])
def test_throttle_batch_intervals_within_bounds_pass(settings, seconds):
    settings.THROTTLE_HEARTBEAT_BATCH_INTERVAL = seconds
    assert check_throttle_settings(None) == []
