import django_filters
from django.db.models import F
from django.utils import timezone
from rest_framework.filters import OrderingFilter

from users.models import OnlineStatus, User
from users.selectors.presence import effective_status_expression, status_q


class AdminUserFilter(django_filters.FilterSet):
    # The status shown, computed now; not the stored column, which a dead sweeper leaves stale.
    online_status = django_filters.ChoiceFilter(choices=OnlineStatus.choices, method="filter_online_status")

    class Meta:
        model = User
        fields = ["online_status", "is_active", "is_staff"]

    def filter_online_status(self, queryset, name, value):
        return queryset.filter(status_q(value, now=_now_of(self.request)))


class NullsLastOrderingFilter(OrderingFilter):
    """DRF's ordering, with never-seen users last in both directions on every database
    (PostgreSQL and SQLite disagree by default), the primary key as a tie-breaker so that
    pages never overlap, and `online_status` meaning the status shown now."""

    def filter_queryset(self, request, queryset, view):
        ordering = self.get_ordering(request, queryset, view)
        if not ordering:
            return queryset
        if any(field.removeprefix("-") == "online_status" for field in ordering):
            queryset = queryset.annotate(shown_status=effective_status_expression(now=_now_of(request)))
        return queryset.order_by(*(_nulls_last(field) for field in ordering), "pk")


def _nulls_last(field):
    name = field.removeprefix("-")
    if name == "online_status":
        name = "shown_status"
    if field.startswith("-"):
        return F(name).desc(nulls_last=True)
    return F(name).asc(nulls_last=True)


def _now_of(request):
    view = request.parser_context.get("view") if request is not None else None
    return getattr(view, "presence_now", None) or timezone.now()
