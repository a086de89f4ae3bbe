from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q


class OnlineStatus(models.TextChoices):
    ONLINE = "online", "Online"
    AWAY = "away", "Away"
    OFFLINE = "offline", "Offline"


# Statuses the sweep has to look at. The partial index below holds exactly these rows, so a
# sweep reads the (small) present part of the table, never the offline majority.
PRESENT_STATUSES = (OnlineStatus.ONLINE, OnlineStatus.AWAY)
PRESENCE_FIELDS = frozenset({"online_status", "last_seen"})


class User(AbstractUser):
    online_status = models.CharField(max_length=7, choices=OnlineStatus.choices, default=OnlineStatus.OFFLINE)
    last_seen = models.DateTimeField(null=True, blank=True)

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
        ]

    def save(self, *args, **kwargs):
        """Saving an existing user never writes presence.

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
        super().save(*args, **kwargs)

    # Thin delegates: every presence write goes through users.services.presence.
    def set_online(self):
        from users.services import presence

        presence.mark_online(user=self)

    def set_away(self):
        from users.services import presence

        presence.set_status(user=self, status=OnlineStatus.AWAY)

    def set_offline(self):
        from users.services import presence

        presence.mark_offline(user=self)

    def update_last_seen(self):
        from users.services import presence

        presence.record_activity(user=self)

    @property
    def is_online(self):
        return self.online_status == OnlineStatus.ONLINE
