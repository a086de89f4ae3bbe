from functools import cached_property

from django.core.paginator import Paginator
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.response import Response


class StrictPageSizeMixin:
    """`page_size` must be a whole number from 1 to max_page_size when given. DRF silently
    falls back to the default page size for anything else, which hides a client's bug."""

    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isdigit() and 1 <= int(raw) <= self.max_page_size):
            raise ValidationError({self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]})
        return super().get_page_size(request)


class UserPagination(StrictPageSizeMixin, PageNumberPagination):
    pass


class CappedCountPaginator(Paginator):
    """Django's paginator, counting at most `limit` rows (all of them with `limit=None`).

    Past the limit, `count` is the limit and `capped` is true, and there is one page more
    than the counted rows fill, so that the last counted page still links to the next."""

    def __init__(self, object_list, per_page, *, limit: int | None):
        super().__init__(object_list, per_page)
        self.limit = limit
        self.capped = False

    @cached_property
    def count(self):
        if self.limit is None or not hasattr(self.object_list, "order_by"):
            return super().count
        # Any limit + 1 rows will do: no order, so PostgreSQL reads whichever come first.
        counted = self.object_list.order_by()[: self.limit + 1].count()
        self.capped = counted > self.limit
        return min(counted, self.limit)

    @cached_property
    def num_pages(self):
        return super().num_pages + self.capped


class CappedCountPagination(UserPagination):
    """Numbered pages whose `count` stops at `count_limit` rows, or at the end of the page
    asked for when that is further (`?page=last` counts them all).

    An exact COUNT reads every matching row: 100,000 online users' rows for a page of 50,
    most of the list's time. Counting stops at the limit instead, and `count_capped` says
    whether it did (then there are more rows than `count`); `next` and `previous` work as
    before, at any depth. Below the limit nothing changes but the `count_capped: false`.
    """

    count_limit = 1000

    def django_paginator_class(self, object_list, per_page):
        return CappedCountPaginator(object_list, per_page, limit=self._count_limit(per_page))

    def _count_limit(self, per_page) -> int | None:
        raw = self.request.query_params.get(self.page_query_param) or "1"
        if raw in self.last_page_strings:
            return None  # the last page needs the whole count
        try:
            end = int(raw) * per_page
        except ValueError:
            return self.count_limit  # not a page number: the paginator refuses it
        if end > 2**62:
            return None  # no such page: an exact count, and the paginator's 404
        return max(self.count_limit, end)

    def get_paginated_response(self, data):
        return Response(
            {
                "count": self.page.paginator.count,
                "count_capped": self.page.paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        paginated = super().get_paginated_response_schema(schema)
        count_capped = {
            "type": "boolean",
            "description": f"True when counting stopped at `count` rows (at least {self.count_limit:,}) and the list "
            "holds more.",
        }
        properties = paginated["properties"]
        paginated["properties"] = {"count": properties.pop("count"), "count_capped": count_capped, **properties}
        paginated["required"] = [*paginated["required"], "count_capped"]
        return paginated


class DirectoryPagination(UserPagination):
    """The directory (all-users/): an organisation of up to 1,000 users in one page."""

    page_size = 1000
    max_page_size = 1000


class UserKeysetPagination(StrictPageSizeMixin, CursorPagination):
    """`?paging=keyset`: pages that continue after the last row seen (`next` carries an opaque
    `after`), with no COUNT and no OFFSET, so that page 20,000 of a million users costs what
    page 1 does. Only for a unique order (username or id), where "after" is well defined."""

    cursor_query_param = "after"
    ordering = "username"
    keyset_orderings = frozenset({"username", "-username", "id", "-id"})

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if ordering[0] not in self.keyset_orderings:
            allowed = ", ".join(sorted(self.keyset_orderings))
            raise ValidationError({"ordering": [f"With paging=keyset, order by one of: {allowed}."]})
        return ordering[:1]
