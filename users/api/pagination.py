from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination


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
