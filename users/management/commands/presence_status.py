import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from users.ops.health import DEGRADED, OK, system_health
from users.selectors.presence import status_counts


class Command(BaseCommand):
    help = (
        "Print users per status and the health of the database, cache, broker and sweeper "
        "(what GET /api/health/ answers). Exits 1 when the system is unavailable."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="One JSON object, for scripts.")

    def handle(self, *args, as_json: bool = False, **options):
        now = timezone.now()
        health = system_health(now=now)
        counts = status_counts(now=now) if health.checks["database"].ok else None
        if as_json:
            self.stdout.write(json.dumps({"users": counts, **health.as_dict()}, indent=2))
        else:
            self._print(health, counts)
        if health.status not in (OK, DEGRADED):
            raise CommandError(f"presence is {health.status}: " + "; ".join(health.reasons), returncode=1)

    def _print(self, health, counts):
        style = {"ok": self.style.SUCCESS, "degraded": self.style.WARNING}.get(health.status, self.style.ERROR)
        self.stdout.write(f"Presence: {style(health.status.upper())}")
        if counts is not None:
            self.stdout.write(
                f"Users: {counts['online']} online, {counts['away']} away, {counts['offline']} offline "
                f"({counts['total']} active)"
            )
        for name, check in health.checks.items():
            mark = self.style.SUCCESS("ok  ") if check.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"  {mark} {name:<8} {check.reason or _summary(name, check.details)}")


def _summary(name, details) -> str:
    if name == "sweeper":
        return (
            f"last sweep {details['age_seconds']:.0f} s ago (limit {details['max_age_seconds']} s), "
            f"marked {details['users_marked_offline']} offline in {details['duration_ms']} ms"
        )
    return ", ".join(f"{key}={value}" for key, value in details.items())
