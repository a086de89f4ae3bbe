"""Input that means exactly what it says: strict types, closed bodies, clear choice errors."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from users.selectors.accounts import ROLES, role_of


def choice_field(choices, name, **kwargs):
    allowed = ", ".join(value for value, _ in choices)
    return serializers.ChoiceField(
        choices=choices,
        error_messages={"invalid_choice": f'"{{input}}" is not a valid {name}. Allowed values: {allowed}.'},
        **kwargs,
    )


class RejectUnknownFieldsMixin:
    """Input naming a field the serializer does not write is refused (400), not ignored: a
    misspelt `{"stauts": "away"}` would otherwise be a heartbeat saying online, and a sent
    `is_staff` would look accepted."""

    rejects_unknown_fields = True  # the OpenAPI schema says so (offchat_backend.openapi)

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unexpected = sorted(set(data.keys()) - writable)
            if unexpected:
                raise serializers.ValidationError(
                    {
                        name: ["This field is read-only." if name in self.fields else "Unknown field."]
                        for name in unexpected
                    }
                )
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF's BooleanField also takes "yes", "0", 1 and the like, which
    the schema does not promise and a client should not rely on."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    """JSON strings only: DRF's CharField turns a number into its digits."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# Longer than any password manager makes; a bound keeps absurd bodies out of the hasher.
PASSWORD_MAX_LENGTH = 128

_DATETIME = serializers.DateTimeField()


def timestamp(value, *, tz=None):
    """A datetime as DRF's DateTimeField writes it (null stays null), for rows built by hand.

    `tz`: the current time zone (timezone.get_current_timezone()), read once by a caller that
    writes many timestamps. DRF reads it again for each value, through asgiref's Local, and
    that read was most of the cost of writing a timestamp: a fifth of a 500-row change feed
    answer (bench/analysis.md, issue 22)."""
    if not value:
        return None
    if tz is None or timezone.is_naive(value):
        return _DATETIME.to_representation(value)
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def account_email_field():
    # Not an EmailField: an account may have none (Django's email is blank=True), and an empty
    # string is no email address to a client checking the schema's format.
    return serializers.CharField(read_only=True, help_text="An email address, or empty when the account has none.")


def join_date_field():
    return serializers.DateTimeField(
        source="date_joined", read_only=True, help_text="`date_joined` again, by the OffChat frontend's name."
    )


def presence_now(context):
    """The view's clock reading (users.api.clock), so that every row of a list is judged at
    one moment."""
    return context.get("presence_now") or timezone.now()


@extend_schema_field(serializers.ChoiceField(choices=ROLES))
class RoleField(serializers.Field):
    """`admin` for staff, `user` otherwise (users.selectors.accounts.role_of): read only."""

    def __init__(self, **kwargs):
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, user):
        return role_of(user)
