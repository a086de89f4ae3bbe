from datetime import timedelta

import pytest
from django.utils import timezone

from users.models import OnlineStatus
from users.selectors.presence import ShownPresence, presence_shown_to
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
