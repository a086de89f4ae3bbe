import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models, transaction
from django.db.models import Q
from django.db.models.functions import Lower


class OnlineStatus(models.TextChoices):
    ONLINE = "online", "Online"
    AWAY = "away", "Away"
    OFFLINE = "offline", "Offline"


class ReportedStatus(models.TextChoices):
    """What a client may say about itself: it is connected either way."""

    ONLINE = "online", "Online"
    AWAY = "away", "Away"


class SessionEndReason(models.TextChoices):
    IDLE = "idle", "Idle past the inactivity timeout"
    LOGOUT = "logout", "Logged out"
    FORCED = "forced", "Ended by the user or an admin"
    ADMIN = "admin", "Set offline by an admin"
    CLOSED = "closed", "Its last socket closed"


# Statuses the sweep has to look at. The partial index below holds exactly these rows, so a
# sweep reads the (small) present part of the table, never the offline majority.
PRESENT_STATUSES = (OnlineStatus.ONLINE, OnlineStatus.AWAY)
# Written only by users.services.presence; a plain save() leaves them alone.
PRESENCE_FIELDS = frozenset(
    {"online_status", "last_seen", "last_active", "manual_status", "share_presence", "presence_update_id"}
)


class User(AbstractUser):
    # The materialized status: what the user's live sessions report (online beats away), or
    # offline with none. What endpoints show is computed from it at read time
    # (users.presence_rules), so a dead sweeper never shows a stale user online.
    online_status = models.CharField(max_length=7, choices=OnlineStatus.choices, default=OnlineStatus.OFFLINE)
    # The connection was alive (any request, any heartbeat), newest over all sessions.
    last_seen = models.DateTimeField(null=True, blank=True)
    # Real input (a non-heartbeat request, a heartbeat that says online), newest over all sessions.
    last_active = models.DateTimeField(null=True, blank=True)
    # Set by the user (Slack's manual away): shown while connected until cleared. NULL, not
    # "", is "none set": the API says null and the status rule tests IS NULL.
    manual_status = models.CharField(  # noqa: DJ001
        max_length=7, choices=ReportedStatus.choices, null=True, blank=True
    )
    share_presence = models.BooleanField(default=True)
    # Position in the change feed; bumped by every write that changes what lists show.
    presence_update_id = models.BigIntegerField(default=0)

    class Meta(AbstractUser.Meta):
        db_table = "users"
        indexes = [
            # Serves the sweep and the online/away filters. It indexes the status, not
            # last_seen: a heartbeat changes only last_seen, so it touches no indexed column
            # and PostgreSQL can apply it as a HOT update.
            models.Index(
                fields=["online_status"],
                name="users_present_status_idx",
                condition=Q(online_status__in=PRESENT_STATUSES),
            ),
            # The admin lists' online and away filters in their default order (username): a
            # page is the first rows of this index that pass the status rule, not a sort of
            # every present user. No column a heartbeat changes, so heartbeats stay HOT. The
            # filter's form that lets PostgreSQL pick it: users.selectors.accounts.shown_status.
            models.Index(
                fields=["username", "id"],
                name="users_present_username_idx",
                condition=Q(online_status__in=PRESENT_STATUSES),
            ),
            # The change feed reads users changed after a cursor. The column moves on
            # transitions only, never on a plain heartbeat.
            models.Index(fields=["presence_update_id"], name="users_presence_update_idx"),
        ]
        constraints = [
            # `Ann` beside `ann` would be two people to the eye: one name whatever its case. The
            # service's lookup gives the friendly refusal; this holds when two admins race it.
            models.UniqueConstraint(
                Lower("username"),
                name="users_username_lower_unique",
                violation_error_message="A user with that username already exists.",
            ),
        ]

    def save(self, *args, **kwargs):
        """Saving an existing user never writes presence; the save and its change-feed entry
        (users.signals, on post_save) commit together.

        Presence is written only by users.services.presence, in conditional UPDATEs. A plain
        save (the Django admin, a password change) would otherwise write back the status and
        last_seen it loaded earlier, undoing a heartbeat or a sweep that committed since.
        """
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in PRESENCE_FIELDS
            ]
        with transaction.atomic():
            super().save(*args, **kwargs)


class PresenceSession(models.Model):
    """One login on one device or tab. Access and refresh tokens carry its id (claim `sid`).

    Live while `ended_at` is null. The sweep ends a session idle past the timeout, but its
    tokens stay valid and the device's next request revives it; logout and a forced end
    revoke it (`revoked_at`), after which its tokens get 401.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presence_sessions")
    user_agent = models.CharField(max_length=256, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    last_active = models.DateTimeField(null=True, blank=True)
    reported_status = models.CharField(max_length=7, choices=ReportedStatus.choices, default=ReportedStatus.ONLINE)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=6, choices=SessionEndReason.choices, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "presence_sessions"
        ordering = ["-created_at", "id"]
        indexes = [
            # The sweep and the per-user aggregation read live sessions only.
            models.Index(fields=["user"], name="presence_session_live_idx", condition=Q(ended_at__isnull=True)),
        ]

    def __str__(self):
        return f"session {self.pk} of user {self.user_id}"

    @property
    def is_live(self) -> bool:
        return self.ended_at is None


class PresenceSequence(models.Model):
    """One row: the last change-feed id handed out.

    Writers take the next id with an UPDATE of this row, as the last lock of their
    transaction. The row lock is held until commit, so ids become visible in commit order
    and a poller that has seen id N has seen every change up to N (Zulip's last_update_id).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_update_id = models.BigIntegerField(default=0)

    class Meta:
        db_table = "presence_sequence"

    def __str__(self):
        return f"presence feed at {self.last_update_id}"


class PresenceTombstone(models.Model):
    """A deleted user, kept for the change feed so pollers drop them too."""

    user_id = models.BigIntegerField(primary_key=True)
    presence_update_id = models.BigIntegerField(db_index=True)
    deleted_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "presence_tombstones"

    def __str__(self):
        return f"deleted user {self.user_id}"


class PresenceSweep(models.Model):
    """One row: the sweeper's last completed run and running totals.

    Written in the sweep's own transaction, so it says exactly what was applied. Health and
    metrics read it in the web process to tell whether beat and a worker are alive.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    finished_at = models.DateTimeField(null=True)
    duration_seconds = models.FloatField(default=0)
    users_marked_offline = models.PositiveIntegerField(default=0)
    sessions_ended = models.PositiveIntegerField(default=0)
    sweeps_total = models.PositiveBigIntegerField(default=0)
    users_marked_offline_total = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "presence_sweep"

    def __str__(self):
        return f"presence sweep finished at {self.finished_at}"


class PresenceInterval(models.Model):
    """A user shown online or away from `started_at` until `ended_at` (null: still so).

    One row per transition of the status shown, written with the transition
    (users.services.history); nothing per heartbeat or ping. Offline is the time no
    interval covers.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presence_intervals")
    status = models.CharField(max_length=7, choices=ReportedStatus.choices)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "presence_intervals"
        indexes = [
            # A user's history over a range.
            models.Index(fields=["user", "started_at"], name="presence_interval_user_idx"),
            # Pruning past the retention.
            models.Index(fields=["ended_at"], name="presence_interval_ended_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user"], condition=Q(ended_at__isnull=True), name="presence_interval_one_open_per_user"
            )
        ]

    def __str__(self):
        return f"user {self.user_id} {self.status} from {self.started_at}"


class PresenceCount(models.Model):
    """Users per status shown at one minute, written by each sweep: the timeline's points."""

    at = models.DateTimeField(primary_key=True)
    online = models.PositiveIntegerField()
    away = models.PositiveIntegerField()
    offline = models.PositiveIntegerField()

    class Meta:
        db_table = "presence_counts"

    def __str__(self):
        return f"{self.online} online, {self.away} away at {self.at}"
