from django.utils import timezone


class PresenceClockMixin:
    """Every presence in one response is computed at one moment: `presence_now`, read once
    when the request starts, for the view, its filters (users.api.filters) and its
    serializers (their context)."""

    def initial(self, request, *args, **kwargs):
        self.presence_now = timezone.now()
        super().initial(request, *args, **kwargs)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "presence_now": self.presence_now}
