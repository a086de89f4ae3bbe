"""User lists with presence: the directory every user sees, and the admin's lists and
actions. Both follow the change feed (`?since=`) and answer ETags."""

import hashlib
import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from offchat_backend.openapi import AutoSchema, error
from users.api.clock import PresenceClockMixin
from users.api.filters import AdminUserFilter, BoundedSearchFilter, NullsLastOrderingFilter, PresenceFilterBackend
from users.api.pagination import CappedCountPagination, DirectoryPagination, UserKeysetPagination
from users.api.serializers import accounts as account_serializers
from users.api.serializers import lists as serializers
from users.api.serializers.presence import PresenceSerializer, SessionSerializer
from users.selectors import accounts, feed
from users.selectors import presence as presence_selectors
from users.services import accounts as account_services
from users.services import auth, presence

# The actions that answer through PresenceListMixin.list().
FEED_ACTIONS = frozenset({"list", "online"})


class ChangeFeedSchema(AutoSchema):
    """The OpenAPI form of PresenceListMixin: `?since=` and keyset parameters, and the three
    shapes a list can answer (a page with its cursor, a keyset page, the changes)."""

    SINCE = OpenApiParameter(
        "since",
        str,
        description=(
            "A `cursor` from an earlier answer: answer only the users changed since, and the ids that left "
            "this list, as `{results, removed, cursor}`. 400 with `code: resync_required` when too old."
        ),
    )
    KEYSET = [
        OpenApiParameter(
            "paging",
            str,
            enum=["keyset"],
            description="`keyset`: pages without a count that continue from `next` (fast at any depth); "
            "order by username or id only.",
        ),
        OpenApiParameter("after", str, description="Where a keyset page starts: take it from `next`."),
    ]

    def _is_feed_action(self) -> bool:
        return getattr(self.view, "action", "list") in FEED_ACTIONS  # plain generic views have no action

    def validates_query(self) -> bool:
        return self._is_feed_action()

    def _get_paginator(self):
        """The pagination the list actions answer with (PresenceListMixin.paginator)."""
        list_pagination_class = getattr(self.view, "list_pagination_class", None)
        if list_pagination_class and self._is_feed_action():
            return list_pagination_class()
        return super()._get_paginator()

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self._is_feed_action():
            parameters += [self.SINCE, *self.KEYSET]
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response" or not self._is_feed_action():
            return responses
        return dict(sorted({**responses, **self._feed_responses(responses["200"])}.items()))

    def _feed_responses(self, page_response) -> dict:
        """A full page carries `cursor` and an ETag; `?since=` answers a change feed instead."""
        serializer = self.get_response_serializers()
        row = self.resolve_serializer(getattr(serializer, "child", serializer), "response").ref
        page = page_response["content"]["application/json"]["schema"]
        # Closed shapes (additionalProperties false), so that exactly one of the three matches.
        changes = {
            "type": "object",
            "additionalProperties": False,
            "required": ["results", "removed", "cursor"],
            "properties": {
                "results": {"type": "array", "items": row},
                "removed": {"type": "array", "items": {"type": "integer"}},
                "cursor": {"type": "string"},
            },
        }
        extra = {"cursor": {"type": "string"}}
        if getattr(self.view, "mirrors_rows_as_users", False):
            extra["users"] = {
                "type": "array",
                "items": row,
                "description": "The rows again, for clients that read `users` (the OffChat frontend); "
                "only in answers to requests without `page`, `page_size`, `paging` or `after`.",
            }
        with_cursor = {"allOf": [page, {"type": "object", "properties": extra}]}
        keyset_page = {
            "type": "object",
            "additionalProperties": False,
            "required": ["results", "cursor"],
            "properties": {
                "next": {"type": "string", "format": "uri", "nullable": True},
                "previous": {"type": "string", "format": "uri", "nullable": True},
                "results": {"type": "array", "items": row},
                "cursor": {"type": "string"},
            },
        }
        return {
            "200": {
                **page_response,
                "description": "A page (with an `ETag` header); with `?paging=keyset` a page without a count; "
                "with `?since=` the changes since that cursor.",
                "content": {"application/json": {"schema": {"oneOf": [with_cursor, keyset_page, changes]}}},
            },
            "304": {"description": "`If-None-Match` matched the page's ETag: nothing changed."},
        }


class PresenceListMixin(PresenceClockMixin):
    """A list with a change feed and an ETag.

    `?since=<cursor>` answers only the users changed after the cursor (`results`), the ids
    that left the list (`removed`) and the next `cursor`. A full page carries an ETag over
    its rows and the `cursor` to follow from; `If-None-Match` with it gets 304.
    """

    schema = ChangeFeedSchema()
    # The list actions' numbered pages, if not pagination_class (which the others keep).
    list_pagination_class = None

    @property
    def paginator(self):
        """Page numbers by default; `?paging=keyset` for deep pages of large lists."""
        if not hasattr(self, "_paginator"):
            paging = self.request.query_params.get("paging")
            if paging not in (None, "keyset"):
                raise ValidationError({"paging": ['The only paging is "keyset"; leave it out for numbered pages.']})
            listing = getattr(self, "action", "list") in FEED_ACTIONS
            if listing and paging == "keyset":
                self._paginator = UserKeysetPagination()
            elif listing and self.list_pagination_class:
                self._paginator = self.list_pagination_class()
            else:
                self._paginator = self.pagination_class()
        return self._paginator

    def get_row_fields(self):
        """The fields the list's rows are read with, as named rows (accounts.as_rows); None for
        model instances."""
        return None

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        if fields := self.get_row_fields():
            queryset = accounts.as_rows(queryset, fields=fields)
        since = request.query_params.get("since")
        if since is not None:
            head = feed.current_cursor(now=self.presence_now)  # read once: checks `since`, and is the next cursor
            cursor = feed.parse_cursor(since, now=self.presence_now, head=head)
            changes = feed.changes_since(queryset=queryset, cursor=cursor, now=self.presence_now, head=head)
            return Response(
                {
                    "results": self.get_serializer(changes.users, many=True).data,
                    "removed": changes.removed_ids,
                    "cursor": str(changes.cursor),
                }
            )
        cursor = feed.current_cursor(now=self.presence_now)
        page = self.paginate_queryset(queryset)
        body = self.get_paginated_response(self.get_serializer(page, many=True).data).data
        etag = _etag_of(body)
        if etag in _etags_in(request.headers.get("If-None-Match", "")):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        # The cursor is left out of the ETag: it moves with the clock, the rows do not.
        return Response({**body, "cursor": str(cursor)}, headers={"ETag": etag})


def _etag_of(body) -> str:
    canonical = json.dumps(body, cls=JSONEncoder, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest() + '"'


def _etags_in(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


class AllUsersView(PresenceListMixin, generics.ListAPIView):
    """Presence of every active user; staff also see emails and account flags.

    Pages of up to 1,000 rows, so that an organisation's whole directory reaches a client in
    one request. A request without paging parameters (the OffChat frontend's) also gets the
    rows under `users`, beside `count`, the shape that client reads; paginated clients that
    name their page get `results` alone.
    """

    pagination_class = DirectoryPagination
    mirrors_rows_as_users = True  # documented by ChangeFeedSchema

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        asked_for_a_page = {"page", "page_size", "paging", "after"} & request.query_params.keys()
        if response.status_code == status.HTTP_200_OK and "count" in response.data and not asked_for_a_page:
            response.data["users"] = response.data["results"]
        return response

    def get_queryset(self):
        if self.request.user.is_staff:
            return accounts.users_for_admin().filter(is_active=True)
        return accounts.user_directory()

    def get_serializer_class(self):
        if self.request.user.is_staff:
            return serializers.AdminUserSerializer
        return serializers.DirectoryUserSerializer

    def get_row_fields(self):
        return accounts.ADMIN_FIELDS if self.request.user.is_staff else accounts.DIRECTORY_FIELDS


class AdminUserViewSet(PresenceListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Every account for staff: the lists, one account (`<id>/`), adding one (POST), and a
    user's presence, sessions and forced logouts."""

    permission_classes = [IsAdminUser]
    serializer_class = serializers.AdminUserSerializer
    # A million accounts, a hundred thousand online: the lists' `count` stops at 1,000 (README,
    # *Lists*). A user's sessions keep an exact one.
    list_pagination_class = CappedCountPagination
    filter_backends = [PresenceFilterBackend, BoundedSearchFilter, NullsLastOrderingFilter]
    filterset_class = AdminUserFilter
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "last_seen", "date_joined", "online_status", "id"]
    ordering = ["username"]
    records_own_presence = False  # set-online-status does (users.api.middleware)

    def get_queryset(self):
        if self.action == "online" and not getattr(self, "swagger_fake_view", False):  # the schema pass has no clock
            return accounts.online_users_for_admin(now=self.presence_now)
        return accounts.users_for_admin()

    def get_row_fields(self):
        return accounts.ADMIN_FIELDS

    def get_serializer_class(self):
        if self.action == "online_status":
            return PresenceSerializer
        if self.action == "set_online_status":
            return serializers.SetOnlineStatusSerializer
        if self.action in ("sessions", "end_session"):
            return SessionSerializer
        if self.action == "create":
            return account_serializers.NewUserSerializer
        return serializers.AdminUserSerializer

    @extend_schema(responses={201: serializers.AdminUserSerializer})
    def create(self, request):
        """Adds an account: offline until it logs in; role `admin` makes it staff."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        is_staff = accounts.role_grants_staff(fields.pop("role"))
        user = account_services.create_user(created_by=request.user, is_staff=is_staff, **fields)
        row = serializers.AdminUserSerializer(user, context=self.get_serializer_context()).data
        return Response(row, status=status.HTTP_201_CREATED)

    @extend_schema(responses=serializers.AdminUserSerializer(many=True))
    @action(detail=False)
    def online(self, request):
        return self.list(request)

    @extend_schema(responses=serializers.PresenceSummarySerializer)
    @action(detail=False)
    def summary(self, request):
        """Active users per status, for the dashboard's counters."""
        counts = presence_selectors.status_counts(now=self.presence_now)
        return Response(serializers.PresenceSummarySerializer(counts).data)

    @action(detail=True, url_path="online-status")
    def online_status(self, request, pk=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        responses={
            200: PresenceSerializer,
            409: error("409", "`online` or `away` for a user with no live session (code `no_live_session`)."),
        }
    )
    # An admin who sets their own status must not be flipped back online by this request.
    @action(detail=True, methods=["post"], url_path="set-online-status", records_own_presence=True)
    def set_online_status(self, request, pk=None):
        user = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        presence.admin_set_status(user=user, status=serializer.validated_data["online_status"])
        return Response(PresenceSerializer(user, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=serializers.ForceLogoutSerializer)
    @action(detail=True, methods=["post"], url_path="force-logout")
    def force_logout(self, request, pk=None):
        """Signs the user out of every device: all their sessions end and are revoked."""
        ended = auth.end_every_session(user=self.get_object())
        return Response({"detail": "Signed out of every device.", "sessions_ended": ended})

    @extend_schema(responses=SessionSerializer(many=True))
    @action(detail=True)
    def sessions(self, request, pk=None):
        sessions = self.paginate_queryset(self.get_object().presence_sessions.all())
        return self.get_paginated_response(self.get_serializer(sessions, many=True).data)

    @extend_schema(parameters=[OpenApiParameter("session_id", OpenApiTypes.UUID, OpenApiParameter.PATH)])
    @action(detail=True, methods=["delete"], url_path=r"sessions/(?P<session_id>[^/.]+)")
    def end_session(self, request, pk=None, session_id=None):
        user = self.get_object()
        session = generics.get_object_or_404(user.presence_sessions.all(), pk=session_id)
        auth.end_session(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(responses=account_serializers.PermissionsSerializer)
class MyPermissionsView(generics.GenericAPIView):
    """The caller's role and what the admin API lets them do (staff only, as the rest of it)."""

    permission_classes = [IsAdminUser]
    serializer_class = account_serializers.PermissionsSerializer

    def get(self, request):
        user = request.user
        answer = {"role": accounts.role_of(user), "permissions": accounts.permissions_of(user)}
        return Response(self.get_serializer(answer).data)


@extend_schema(responses=serializers.DashboardStatsSerializer)
class DashboardStatsView(PresenceClockMixin, generics.GenericAPIView):
    """Active users per status, in the shape the OffChat frontend's dashboard card reads."""

    permission_classes = [IsAdminUser]
    serializer_class = serializers.DashboardStatsSerializer

    def get(self, request):
        counts = presence_selectors.status_counts(now=self.presence_now)
        return Response(self.get_serializer({"users": counts}).data)
