import logging

from django.db import DatabaseError

from users.services import presence

logger = logging.getLogger(__name__)

_PRESENCE_WRITTEN_BY_VIEW = "_presence_written_by_view"


def presence_written_by_view(request) -> None:
    """Tell PresenceMiddleware that this view wrote the requester's presence itself
    (login, logout, heartbeat, a status change), so it must not overwrite it."""
    setattr(getattr(request, "_request", request), _PRESENCE_WRITTEN_BY_VIEW, True)


class PresenceMiddleware:
    """Counts every authenticated request as activity.

    It acts after the view, not before: DRF authenticates the JWT inside the view and only
    then sets the user on the Django request, so before the view every API client still
    looks anonymous. It touches the presence session of the token used; a request without
    one (the Django admin's cookie session) is no chat client and counts for nothing.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        session = getattr(user, "presence_session", None)
        if session is None or getattr(request, _PRESENCE_WRITTEN_BY_VIEW, False):
            return response
        try:
            presence.record_activity(user=user, session=session, active=True)
        except DatabaseError:
            # The response is already made; a missed activity write is healed by the next one.
            logger.exception("event=activity_write_failed user_id=%s", user.pk)
        return response
