from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from users.models import OnlineStatus, User
from users.selectors.presence import (
    ShownPresence,
    active_account_count,
    forget_active_account_count,
    presence_seen_by,
    presence_shown_to,
    status_counts,
)
from users.services import presence
from users.tests.factories import StaffFactory, UserFactory

NOW = timezone.now().replace(microsecond=0)


@pytest.mark.django_db
class TestPrivacy:
    def test_a_hidden_user_is_offline_with_no_last_seen_to_other_users(self):
        hidden = UserFactory(share_presence=False, online_status=OnlineStatus.ONLINE, last_seen=NOW, last_active=NOW)
        viewer = UserFactory()
        assert presence_shown_to(viewer=viewer, user=hidden, now=NOW) == ShownPresence(OnlineStatus.OFFLINE, None)

    def test_staff_and_the_user_see_the_truth(self):
        hidden = UserFactory(share_presence=False, online_status=OnlineStatus.ONLINE, last_seen=NOW, last_active=NOW)
        for viewer in (StaffFactory(), hidden):
            assert presence_shown_to(viewer=viewer, user=hidden, now=NOW).status == OnlineStatus.ONLINE

    def test_a_hidden_offline_user_shows_no_last_seen_but_a_shared_one_does(self):
        seen = NOW - timedelta(hours=1)
        hidden = UserFactory(share_presence=False, last_seen=seen)
        shared = UserFactory(last_seen=seen)
        viewer = UserFactory()
        assert presence_shown_to(viewer=viewer, user=hidden, now=NOW).last_seen is None
        assert presence_shown_to(viewer=viewer, user=shared, now=NOW) == ShownPresence(OnlineStatus.OFFLINE, seen)

    def test_lists_show_no_last_seen_for_present_users(self):
        online = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW, last_active=NOW)
        shown = presence_shown_to(viewer=StaffFactory(), user=online, now=NOW)
        assert shown == ShownPresence(OnlineStatus.ONLINE, None)

    def test_a_list_judges_every_row_at_its_one_moment_whenever_the_row_is_built(self):
        timeout = timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT)
        about_to_leave = UserFactory(
            online_status=OnlineStatus.ONLINE, last_seen=NOW - timeout + timedelta(seconds=1), last_active=NOW
        )
        seen = presence_seen_by(viewer=StaffFactory(), now=NOW)
        with time_machine.travel(NOW + timedelta(hours=1), tick=False):
            assert seen(about_to_leave) == ShownPresence(OnlineStatus.ONLINE, None)
            assert presence_shown_to(viewer=StaffFactory(), user=about_to_leave, now=timezone.now()).status == (
                OnlineStatus.OFFLINE
            )


@pytest.mark.django_db
class TestTheCountOfActiveAccounts:
    def test_is_kept_between_reads(self):
        UserFactory.create_batch(3)
        assert active_account_count() == 3
        with CaptureQueriesContext(connection) as queries:
            assert active_account_count() == 3
        assert len(queries) == 0

    def test_is_forgotten_by_every_account_change_through_the_orm(self):
        first, second = UserFactory.create_batch(2)
        assert active_account_count() == 2
        UserFactory()
        assert active_account_count() == 3
        first.is_active = False
        first.save()
        assert active_account_count() == 2
        second.delete()
        assert active_account_count() == 1
        first.is_active = True
        first.save(update_fields=["is_active"])
        assert active_account_count() == 2

    def test_a_save_that_cannot_change_it_keeps_it(self):
        user = UserFactory()
        assert active_account_count() == 1
        user.last_login = timezone.now()
        user.save(update_fields=["last_login"])  # what a login saves
        with CaptureQueriesContext(connection) as queries:
            assert active_account_count() == 1
        assert len(queries) == 0

    def test_the_summary_counts_offline_as_the_rest_of_the_active_accounts(self):
        online, _, _ = UserFactory.create_batch(3)
        presence.start_session(user=online)
        counts = status_counts(now=timezone.now())
        assert counts == {"online": 1, "away": 0, "offline": 2, "total": 3}
        # An UPDATE past the ORM is counted when the kept total expires; never below those present.
        User.objects.exclude(pk=online.pk).update(is_active=False)
        assert status_counts(now=timezone.now())["total"] == 3
        forget_active_account_count()
        assert status_counts(now=timezone.now()) == {"online": 1, "away": 0, "offline": 0, "total": 1}
