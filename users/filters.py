import django_filters
from django.db.models import F
from rest_framework.filters import OrderingFilter

from users.models import OnlineStatus, User


class AdminUserFilter(django_filters.FilterSet):
    online_status = django_filters.ChoiceFilter(choices=OnlineStatus.choices)

    class Meta:
        model = User
        fields = ["online_status", "is_active", "is_staff"]


class NullsLastOrderingFilter(OrderingFilter):
    """DRF's ordering, with never-seen users last in both directions on every database
    (PostgreSQL and SQLite disagree by default), and the primary key as a tie-breaker so
    that pages never overlap."""

    def filter_queryset(self, request, queryset, view):
        ordering = self.get_ordering(request, queryset, view)
        if not ordering:
            return queryset
        return queryset.order_by(*(_nulls_last(field) for field in ordering), "pk")


def _nulls_last(field):
    name = field.removeprefix("-")
    if field.startswith("-"):
        return F(name).desc(nulls_last=True)
    return F(name).asc(nulls_last=True)
