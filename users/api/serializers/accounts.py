from django.contrib.auth.validators import UnicodeUsernameValidator
from rest_framework import serializers

from users.api.serializers.fields import (
    PASSWORD_MAX_LENGTH,
    RejectUnknownFieldsMixin,
    StrictCharField,
    choice_field,
)
from users.models import User
from users.selectors.accounts import ROLES, STAFF_PERMISSIONS

_NAME_LENGTH = User._meta.get_field("first_name").max_length


class NewUserSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """An account an admin adds (users.services.accounts.create_user); the password is never
    answered."""

    username = StrictCharField(
        max_length=User._meta.get_field("username").max_length, validators=[UnicodeUsernameValidator()]
    )
    password = StrictCharField(write_only=True, trim_whitespace=False, max_length=PASSWORD_MAX_LENGTH)
    email = serializers.EmailField(
        required=False, allow_blank=True, default="", max_length=User._meta.get_field("email").max_length
    )
    role = choice_field([(role, role) for role in ROLES], "role", required=False, default="user")
    first_name = StrictCharField(required=False, allow_blank=True, default="", max_length=_NAME_LENGTH)
    last_name = StrictCharField(required=False, allow_blank=True, default="", max_length=_NAME_LENGTH)


class PermissionsSerializer(serializers.Serializer):
    """What the OffChat frontend asks before it shows an admin tab."""

    role = serializers.ChoiceField(choices=ROLES)
    permissions = serializers.ListField(child=serializers.ChoiceField(choices=STAFF_PERMISSIONS))
