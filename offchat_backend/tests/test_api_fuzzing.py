"""schemathesis against our own OpenAPI schema, signed in as a user and as staff, with a bounded
number of generated requests per operation (valid and invalid): no 5xx, and every error a
JSON object."""

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.throttling import ScopedRateThrottle
from schemathesis.specs.openapi.checks import ignored_auth, negative_data_rejection, positive_data_acceptance

from users.services import auth, presence
from users.tests.factories import StaffFactory, UserFactory

EXAMPLES_PER_OPERATION = 25
# Every schemathesis check runs but these. Ours: no 5xx, every error a JSON object.
EXCLUDED_CHECKS = [
    # Each call carries the signed-in token, so a request generated "without auth" has it too;
    # forged and missing tokens are tested in users/tests/test_security.py.
    ignored_auth,
    # Schema-valid yet refused: a cursor, an `after` or an id is valid only if the server made it.
    positive_data_acceptance,
    # It expects unknown query parameters to be refused; the API ignores them, as HTTP caches
    # and cache-busting clients expect. Wrong values of known parameters and bodies are 400s
    # (tested in users/tests/api/test_filters.py and offchat_backend/tests/test_parsers.py).
    negative_data_rejection,
]


@schemathesis.check
def errors_are_json_objects(ctx, response, case):
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]  # lower-case names, lists of values
    assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and body, f"{response.status_code} with a body that is not an error object: {body!r}"
    return None


def _our_schema():
    """The schema /api/schema/ serves, generated as it does."""
    spec = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(spec))


fuzzed = schemathesis.openapi.from_dict(_our_schema())


@pytest.fixture
def app(db):
    """The WSGI app, called in process. As in Django's test client, the request signals keep
    their hands off the database connection, which holds the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _signed_in(person, monkeypatch):
    # Generous limits: a 429 would stop the fuzzer from reaching the views.
    for scope in ("anon", "user", "login", "login_username", "heartbeat"):
        monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, scope, "100000/min")
    UserFactory.create_batch(3)  # others to list, read and change
    presence.mark_inactive_users_offline()  # health answers 503 until a first sweep
    return {"Authorization": f"Bearer {auth.log_in(user=person).access}"}


@pytest.fixture
def as_user(db, monkeypatch):
    return _signed_in(UserFactory(), monkeypatch)


@pytest.fixture
def as_staff(db, monkeypatch):
    return _signed_in(StaffFactory(), monkeypatch)


def _call_and_check(case, app, headers):
    response = case.call(app=app, headers=headers)
    case.validate_response(response, additional_checks=[errors_are_json_objects], excluded_checks=EXCLUDED_CHECKS)


@fuzzed.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_as_a_user_no_input_gets_a_server_error_or_a_non_json_error(case, app, as_user):
    _call_and_check(case, app, as_user)


@fuzzed.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_as_staff_no_input_gets_a_server_error_or_a_non_json_error(case, app, as_staff):
    _call_and_check(case, app, as_staff)
