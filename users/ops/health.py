"""Is the system working? The questions ops used to answer by hand, answered by the system.

- database: can we run a query?
- cache: can we write and read the cache (Redis in production; throttles live there)?
- broker: can we reach Celery's broker?
- sweeper: did a sweep complete within the last 3 sweep intervals? If not, beat or every
  worker is down, and nobody is being marked offline.

The database and the sweeper are vital (503); a failing cache or broker alone is degraded
(200): requests are still served, and a broker that stays down stops the sweeper too.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.utils import timezone
from kombu import Connection

from users.selectors.presence import last_sweep

OK, DEGRADED, UNAVAILABLE = "ok", "degraded", "unavailable"
SWEEPS_MISSED_BEFORE_UNHEALTHY = 3


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str = ""
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"ok": self.ok, **({"reason": self.reason} if self.reason else {}), **self.details}


@dataclass(frozen=True)
class Health:
    status: str
    checks: dict[str, Check]

    @property
    def reasons(self) -> list[str]:
        return [f"{name}: {check.reason}" for name, check in self.checks.items() if not check.ok]

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "reasons": self.reasons,
            "checks": {name: check.as_dict() for name, check in self.checks.items()},
        }


def system_health(*, now: datetime | None = None) -> Health:
    now = now or timezone.now()
    checks = {
        "database": _check_database(),
        "cache": _check_cache(),
        "broker": _check_broker(),
    }
    if checks["database"].ok:
        checks["sweeper"] = sweeper_check(now=now)
    else:
        checks["sweeper"] = Check(False, "unknown: the database is unreachable", {"max_age_seconds": _sweep_max_age()})
    if not (checks["database"].ok and checks["sweeper"].ok):
        status = UNAVAILABLE
    elif all(check.ok for check in checks.values()):
        status = OK
    else:
        status = DEGRADED
    return Health(status=status, checks=checks)


def _sweep_max_age() -> int:
    return SWEEPS_MISSED_BEFORE_UNHEALTHY * settings.PRESENCE_SWEEP_INTERVAL


def sweeper_check(*, now: datetime) -> Check:
    max_age = _sweep_max_age()
    sweep = last_sweep()
    if sweep.finished_at is None:
        return Check(
            False, "no sweep has completed yet: is a Celery worker with beat running?", {"max_age_seconds": max_age}
        )
    age = (now - sweep.finished_at).total_seconds()
    details = {
        "last_completed_at": sweep.finished_at.isoformat(),
        "age_seconds": round(age, 1),
        "max_age_seconds": max_age,
        "users_marked_offline": sweep.users_marked_offline,
        "sessions_ended": sweep.sessions_ended,
        "duration_ms": round(sweep.duration_seconds * 1000, 1),
    }
    if age > max_age:
        reason = f"the last sweep completed {age:.0f} s ago (limit {max_age} s): is beat or every worker down?"
        return Check(False, reason, details)
    return Check(True, details=details)


def _check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as failure:
        return Check(False, f"unreachable ({type(failure).__name__})")
    return Check(True, details={"vendor": connection.vendor})


def _check_cache() -> Check:
    probe = f"health-probe-{uuid.uuid4()}"
    try:
        cache.set(probe, "1", timeout=10)
        answered = cache.get(probe)
        cache.delete(probe)
    except Exception as failure:  # noqa: BLE001 (each cache backend raises its own errors)
        return Check(False, f"unreachable ({type(failure).__name__})")
    if answered != "1":
        return Check(False, "a value written was not read back")
    return Check(True, details={"backend": settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]})


def _check_broker() -> Check:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        queue = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        if not queue.is_dir():
            return Check(False, "the filesystem broker's queue folder is missing")
        return Check(True, details={"transport": "filesystem"})
    try:
        with Connection(url, connect_timeout=2) as broker:
            broker.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            transport = broker.transport.driver_type
    except Exception as failure:  # noqa: BLE001 (kombu raises per-transport errors)
        return Check(False, f"unreachable ({type(failure).__name__})")
    return Check(True, details={"transport": transport})
