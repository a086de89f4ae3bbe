import re

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db
# Served for people, not part of the API they describe.
NOT_IN_SCHEMA = {"/api/schema/", "/api/docs/"}


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def api_routes(patterns=None, prefix=""):
    """Every URL route under /api/, with its parameters written as `{}`."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + _route_text(pattern)
        if isinstance(pattern, URLResolver):
            yield from api_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/"):
            yield "/" + route


def _route_text(pattern) -> str:
    text = str(pattern.pattern).lstrip("^").rstrip("$").replace("\\.", ".")
    text = re.sub(r"\(\?P<\w+>[^)]*\)", "{}", text)  # regex groups (routers)
    return re.sub(r"<(?:\w+:)?\w+>", "{}", text)  # path converters


def normalized(path: str) -> str:
    return re.sub(r"\{\w+\}", "{}", path)


def test_the_schema_is_valid_openapi_3_with_no_generator_warnings():
    # --fail-on-warn: an endpoint the generator had to guess about fails here.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_the_schema_validates(schema):
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")


def test_every_api_route_is_in_the_schema(schema):
    routes = {normalized(route) for route in api_routes()} - NOT_IN_SCHEMA
    documented = {normalized(path) for path in schema["paths"]}
    assert len(routes) >= 15
    assert routes == documented


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def test_every_operation_documents_its_errors(schema):
    for path, method, operation in operations(schema):
        codes = set(operation["responses"])
        where = f"{method} {path}"
        assert codes & {"200", "201", "204"}, where
        if operation.get("security", [{}]) != [{}]:  # no security: anyone may call it
            assert {"jwtAuth": []} in operation["security"], where
            assert "401" in codes, where
        if path != "/api/health/":
            assert "429" in codes, where
        if "{" in path:
            assert "404" in codes, where
        if method in {"POST", "PUT", "PATCH"}:
            assert "400" in codes, where
        if path.startswith("/api/users/admin/"):
            assert "403" in codes, where


def test_request_bodies_and_the_bearer_scheme(schema):
    assert schema["components"]["securitySchemes"]["jwtAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    heartbeat = schema["paths"]["/api/users/heartbeat/"]["post"]
    body = heartbeat["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][body]["properties"]["status"]["allOf"][0]["$ref"].endswith(
        "ReportedStatusEnum"
    )
    login = schema["paths"]["/api/users/login/"]["post"]
    assert login["security"] == [{}]
    assert set(login["responses"]) == {"200", "400", "401", "429"}


def test_presence_lists_document_the_change_feed_and_etag(schema):
    for path in ("/api/users/all-users/", "/api/users/admin/users/", "/api/users/admin/users/online/"):
        operation = schema["paths"][path]["get"]
        assert {"since", "paging", "after"} <= {parameter["name"] for parameter in operation["parameters"]}, path
        assert "304" in operation["responses"], path
        feed = operation["responses"]["200"]["content"]["application/json"]["schema"]["oneOf"][2]
        assert set(feed["required"]) == {"results", "removed", "cursor"}


def test_the_schema_and_the_docs_are_served_without_authentication(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/users/heartbeat/" in schema.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    # Swagger UI's files come with the project (drf-spectacular-sidecar), never from a CDN.
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn." not in page


def test_history_queries_say_a_date_as_to_is_its_whole_day(schema):
    history = ("/api/users/me/history/", "/api/users/admin/users/{id}/history/")
    for path in (*history, "/api/users/admin/presence/timeline/"):
        parameters = {parameter["name"]: parameter for parameter in schema["paths"][path]["get"]["parameters"]}
        assert "that whole day" in parameters["to"]["description"], path
        assert "400" in schema["paths"][path]["get"]["responses"], path


def test_every_timeline_point_says_whether_its_step_is_over(schema):
    point = schema["components"]["schemas"]["Point"]
    assert point["properties"]["partial"]["type"] == "boolean"
    assert "partial" in point["required"]
    assert "current minute" in point["properties"]["partial"]["description"]
