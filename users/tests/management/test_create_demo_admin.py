import pytest
from django.core.management import CommandError, call_command

from users.models import User

pytestmark = pytest.mark.django_db


def test_creates_a_superuser_and_prints_working_credentials(settings, capsys):
    settings.DEBUG = True
    call_command("create_demo_admin")
    admin = User.objects.get(username="admin")
    assert admin.is_staff and admin.is_superuser
    assert admin.check_password("admin")
    assert "username=admin password=admin" in capsys.readouterr().out


def test_running_again_resets_the_password_instead_of_failing(settings):
    settings.DEBUG = True
    call_command("create_demo_admin")
    call_command("create_demo_admin", password="another")
    assert User.objects.filter(username="admin").count() == 1
    assert User.objects.get(username="admin").check_password("another")


def test_refuses_to_run_with_debug_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("create_demo_admin")
    assert not User.objects.exists()
