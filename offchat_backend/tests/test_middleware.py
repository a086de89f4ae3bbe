"""offchat_backend.middleware: a request answered under ASGI gives its database connection back."""

import pytest
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory

from offchat_backend.middleware import AsgiConnectionClosingMiddleware
from offchat_backend.tests.support import AsgiServer, database_connections
from users.models import User


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_requests_answered_by_daphne_leave_no_database_connection_open(tmp_path):
    """Health checks and scrapes of the socket process: each used to keep a PostgreSQL
    connection (and a descriptor) open until a rare garbage collection."""
    asgi = AsgiServer(tmp_path)
    try:
        # Counted as connections to PostgreSQL, not descriptors: the process's own (its hub's
        # follower) may open at any moment, and a client's socket may linger a moment.
        before = database_connections(asgi.process.pid)
        for path in ["/api/health/"] * 15 + ["/metrics"] * 15:
            assert asgi.http(path)[0] in (200, 503)  # 503: no sweep ran, no worker here
        assert database_connections(asgi.process.pid) <= before + 1  # + the follower's, if it opened meanwhile
    finally:
        asgi.stop()


@pytest.mark.django_db
def test_a_wsgi_request_keeps_its_persistent_connection():
    def view(request):
        User.objects.exists()
        return HttpResponse()

    AsgiConnectionClosingMiddleware(view)(RequestFactory().get("/"))
    assert connection.connection is not None
