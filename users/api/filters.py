import django_filters
from django import forms
from django.db.models import F
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import serializers
from rest_framework.filters import OrderingFilter, SearchFilter, search_smart_split

from users.models import OnlineStatus, User
from users.presence_rules import status_rank_expression
from users.selectors.accounts import shown_status


class StrictBooleanFormField(forms.NullBooleanField):
    """`true` or `false`, or absent. django-filter's boolean widget reads anything else as
    absent, so `?is_staff=yes` would list everyone without a word."""

    widget = forms.TextInput

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value in ("true", "false"):
            return value == "true"
        raise forms.ValidationError("Use true or false.", code="invalid")

    def validate(self, value):
        pass


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanFormField


class PresenceFilterBackend(DjangoFilterBackend):
    """django-filter's backend, handing the view's clock to the filterset: a list's filter
    and its rows judge presence at one moment (users.api.clock)."""

    def get_filterset_kwargs(self, request, queryset, view):
        return {**super().get_filterset_kwargs(request, queryset, view), "now": view.presence_now}


class AdminUserFilter(django_filters.FilterSet):
    # The status shown, computed now; not the stored column, which a dead sweeper leaves stale.
    # In the form that serves a page from an index whatever the table's statistics say.
    online_status = django_filters.ChoiceFilter(choices=OnlineStatus.choices, method="filter_online_status")
    is_active = StrictBooleanFilter()
    is_staff = StrictBooleanFilter()

    class Meta:
        model = User
        fields = ["online_status", "is_active", "is_staff"]

    def __init__(self, *args, now, **kwargs):
        super().__init__(*args, **kwargs)
        self.now = now

    def filter_online_status(self, queryset, name, value):
        return shown_status(queryset, value, now=self.now)


class BoundedSearchFilter(SearchFilter):
    """DRF's search, with its errors keyed by the parameter like every other 400, and a
    length limit: each term becomes an ILIKE over four columns, and a 20,000-character
    search is a slow scan for any client to order, never a name."""

    max_length = 150  # Django's username length

    def get_search_terms(self, request):
        field = serializers.CharField(trim_whitespace=False, allow_blank=True, max_length=self.max_length)
        try:
            value = field.run_validation(request.query_params.get(self.search_param, ""))
        except serializers.ValidationError as invalid:
            raise serializers.ValidationError({self.search_param: invalid.detail}) from invalid
        return search_smart_split(value)


class NullsLastOrderingFilter(OrderingFilter):
    """DRF's ordering, with never-seen users last in both directions on every database
    (PostgreSQL and SQLite disagree by default), the primary key as a tie-breaker so that
    pages never overlap, and `online_status` meaning the status shown now, ranked by presence:
    descending lists online, away, offline (users.presence_rules.status_rank_expression)."""

    def filter_queryset(self, request, queryset, view):
        ordering = self.get_ordering(request, queryset, view)
        if not ordering:
            return queryset
        if any(field.removeprefix("-") == "online_status" for field in ordering):
            queryset = queryset.annotate(shown_status_rank=status_rank_expression(now=view.presence_now))
        return queryset.order_by(*(_nulls_last(field) for field in ordering), "pk")


def _nulls_last(field):
    name = field.removeprefix("-")
    if name == "online_status":
        name = "shown_status_rank"
    if field.startswith("-"):
        return F(name).desc(nulls_last=True)
    return F(name).asc(nulls_last=True)
