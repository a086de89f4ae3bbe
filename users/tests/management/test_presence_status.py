import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from offchat_backend.tests.support import REPO, clean_env, free_port
from users.services import presence
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_prints_users_per_status_and_each_check(capsys):
    presence.start_session(user=UserFactory())
    presence.start_session(user=UserFactory(), at=timezone.now() - timedelta(hours=1))
    presence.mark_inactive_users_offline()

    call_command("presence_status")

    out = capsys.readouterr().out
    assert "Presence: OK" in out
    assert "Users: 1 online, 0 away, 1 offline (2 active)" in out
    assert "marked 1 offline" in out
    for check in ("database", "cache", "broker", "sweeper"):
        assert f"ok   {check}" in out


def test_fails_with_the_reason_when_the_sweeper_never_ran(capsys):
    with pytest.raises(CommandError, match="no sweep has completed yet") as failure:
        call_command("presence_status", "--json")
    assert failure.value.returncode == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "unavailable"
    assert report["users"] == {"online": 0, "away": 0, "offline": 0, "total": 0}


@pytest.fixture
def unreachable_database_env(tmp_path):
    """Settings whose PostgreSQL is down: nothing listens on that port."""
    return clean_env(
        DJANGO_SETTINGS_MODULE="offchat_backend.settings.test",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/offchat",
        LOCAL_STATE_DIR=str(tmp_path),
    )


def test_the_command_reports_an_unreachable_database(unreachable_database_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "presence_status"],
        cwd=REPO,
        env=unreachable_database_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "FAIL database unreachable (OperationalError)" in result.stdout
    assert "Users:" not in result.stdout


def test_the_endpoint_answers_503_in_json_when_the_database_is_unreachable(unreachable_database_env):
    request_health = (
        "import django, json; django.setup(); from django.test import Client; "
        "response = Client().get('/api/health/'); "
        "print(json.dumps({'code': response.status_code, 'body': response.json()}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", request_health],
        cwd=REPO,
        env=unreachable_database_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["code"] == 503
    assert answer["body"]["reasons"][:2] == [
        "database: unreachable (OperationalError)",
        "sweeper: unknown: the database is unreachable",
    ]
