"""The README's quick start, as written: the one-liner that adds an ordinary user."""

import re
import shlex

import pytest
from django.core.management import call_command

from offchat_backend.tests.support import REPO
from users.models import User

pytestmark = pytest.mark.django_db


def test_the_readmes_ordinary_user_one_liner_makes_a_user_who_can_log_in(client):
    readme = (REPO / "README.md").read_text()
    [line] = re.findall(r"^\.venv/bin/python manage\.py shell -c .*create_user.*$", readme, re.MULTILINE)
    argv = shlex.split(line)
    assert argv[:4] == [".venv/bin/python", "manage.py", "shell", "-c"]
    call_command("shell", command=argv[4])

    user = User.objects.get(username="alice")
    assert (user.is_staff, user.is_superuser, user.is_active) == (False, False, True)
    password = re.search(r"password='([^']*)'", argv[4]).group(1)
    response = client.post(
        "/api/users/login/", {"username": "alice", "password": password}, content_type="application/json"
    )
    assert response.status_code == 200
