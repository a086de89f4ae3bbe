from django.conf import settings
from django.core.checks import Error, Warning, register

from users.presence_rules import transition_margin

# Longer, and a runaway client spread over processes runs unrefused for as long.
MAX_THROTTLE_BATCH_INTERVAL = 10


@register()
def check_presence_settings(app_configs, **kwargs):
    timeout = settings.PRESENCE_INACTIVITY_TIMEOUT
    heartbeat = settings.PRESENCE_HEARTBEAT_INTERVAL
    problems = []
    if min(timeout, heartbeat, settings.PRESENCE_SWEEP_INTERVAL, settings.PRESENCE_AWAY_AFTER) <= 0:
        problems.append(Error("Presence intervals must be positive numbers of seconds.", id="users.E001"))
    elif timeout <= heartbeat:
        problems.append(
            Error(
                f"PRESENCE_INACTIVITY_TIMEOUT ({timeout}s) must exceed PRESENCE_HEARTBEAT_INTERVAL "
                f"({heartbeat}s), or the sweep marks users offline between two heartbeats.",
                id="users.E002",
            )
        )
    if settings.PRESENCE_WRITE_GRANULARITY >= heartbeat > 0:
        problems.append(
            Warning(
                "PRESENCE_WRITE_GRANULARITY is not below PRESENCE_HEARTBEAT_INTERVAL: "
                "some heartbeats will not move last_seen.",
                id="users.W001",
            )
        )
    request_granularity = settings.PRESENCE_WRITE_GRANULARITY + heartbeat
    if settings.PRESENCE_WRITE_GRANULARITY and request_granularity >= timeout > heartbeat:
        problems.append(
            Warning(
                f"PRESENCE_WRITE_GRANULARITY + PRESENCE_HEARTBEAT_INTERVAL ({request_granularity}s) is not below "
                f"PRESENCE_INACTIVITY_TIMEOUT ({timeout}s): a client that makes requests but no heartbeats "
                "would be marked offline between two writes.",
                id="users.W002",
            )
        )
    batch, margin = settings.PRESENCE_WRITE_BATCH_INTERVAL, transition_margin().total_seconds()
    if not 0 <= batch < margin:
        problems.append(
            Error(
                f"PRESENCE_WRITE_BATCH_INTERVAL ({batch}s) must be at least 0 and below the change feed's "
                f"transition margin ({margin:g}s, half of PRESENCE_INACTIVITY_TIMEOUT): a deferred write "
                "must land within it.",
                id="users.E003",
            )
        )
    return problems


@register()
def check_throttle_settings(app_configs, **kwargs):
    interval = settings.THROTTLE_HEARTBEAT_BATCH_INTERVAL
    if not 0 <= interval <= MAX_THROTTLE_BATCH_INTERVAL:
        return [
            Error(
                f"THROTTLE_HEARTBEAT_BATCH_INTERVAL ({interval}s) must be between 0 and "
                f"{MAX_THROTTLE_BATCH_INTERVAL}s: a client spread over several processes is refused "
                "only this long after crossing its limit.",
                id="users.E004",
            )
        ]
    return []
