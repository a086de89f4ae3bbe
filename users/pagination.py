from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination


class UserPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


class UserKeysetPagination(CursorPagination):
    """`?paging=keyset`: pages that continue after the last row seen (`next` carries an opaque
    `after`), with no COUNT and no OFFSET, so that page 20,000 of a million users costs what
    page 1 does. Only for a unique order (username or id), where "after" is well defined."""

    cursor_query_param = "after"
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "username"
    keyset_orderings = frozenset({"username", "-username", "id", "-id"})

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if ordering[0] not in self.keyset_orderings:
            allowed = ", ".join(sorted(self.keyset_orderings))
            raise ValidationError({"ordering": [f"With paging=keyset, order by one of: {allowed}."]})
        return ordering[:1]
