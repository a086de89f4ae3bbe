import logging

from django.db import DatabaseError

from users.models import PresenceSession
from users.services import presence

logger = logging.getLogger(__name__)


class PresenceMiddleware:
    """Counts every authenticated request as activity.

    It acts after the view, not before: DRF authenticates the JWT inside the view and only
    then sets `auth` on the Django request (users.api.authentication: the token's presence
    session), so before the view every API client still looks anonymous. A request without
    a presence session (the Django admin's cookie session) is no chat client and counts for
    nothing. A view that writes its caller's presence itself (login, logout, heartbeat, a
    status change) says so with `records_own_presence`, and is left alone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        session = getattr(request, "auth", None)
        if not isinstance(session, PresenceSession) or _view_records_own_presence(request):
            return response
        try:
            presence.record_activity(user=session.user, session=session, active=True, may_defer=True)
        except DatabaseError:
            # The response is already made; a missed activity write is healed by the next one.
            logger.exception("event=activity_write_failed user_id=%s", session.user_id)
        return response


def _view_records_own_presence(request) -> bool:
    """`records_own_presence` of the view that answered: a class attribute, or for one action
    of a viewset an `@action(records_own_presence=True)` argument."""
    view = getattr(request.resolver_match, "func", None)
    default = getattr(getattr(view, "cls", None), "records_own_presence", False)
    return getattr(view, "initkwargs", {}).get("records_own_presence", default)
