"""Presence over time through the API (users.api.history): my history, a user's history for
staff, the timeline; every 400, 401, 403 and 404; privacy; `last_active` in list rows."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from users import tasks
from users.models import PresenceCount, PresenceInterval
from users.services import presence
from users.tests.factories import UserFactory
from users.tests.helpers import (
    ADMIN_USERS,
    ALL_USERS,
    HEARTBEAT,
    ME,
    SUMMARY,
    assert_json,
    assert_json_error,
    client_for,
)

pytestmark = pytest.mark.django_db
MY_HISTORY = "/api/users/me/history/"
TIMELINE = "/api/users/admin/presence/timeline/"
# A Wednesday; Berlin is on CET (UTC+1).
NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)


def history_url(user_id):
    return f"/api/users/admin/users/{user_id}/history/"


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def seed(user):
    """Online yesterday 08:00-10:00 UTC, away 10:00-10:30, and online since 11:00 today (in
    place of what a login recorded)."""
    PresenceInterval.objects.filter(user=user).delete()
    yesterday = NOW - timedelta(days=1)
    PresenceInterval.objects.create(
        user=user, status="online", started_at=yesterday.replace(hour=8), ended_at=yesterday.replace(hour=10)
    )
    PresenceInterval.objects.create(
        user=user, status="away", started_at=yesterday.replace(hour=10), ended_at=yesterday.replace(hour=10, minute=30)
    )
    PresenceInterval.objects.create(user=user, status="online", started_at=NOW.replace(hour=11))


class TestMyHistory:
    def test_defaults_to_the_last_seven_local_days_in_utc(self, user, user_client):
        seed(user)
        body = assert_json(user_client.get(MY_HISTORY), 200)
        assert body["tz"] == "UTC"
        assert body["from"] == "2026-03-05T00:00:00Z"
        assert body["to"] == "2026-03-11T12:00:00Z"
        assert [day["date"] for day in body["days"]] == [f"2026-03-{n:02}" for n in range(5, 12)]
        assert body["intervals"] == [
            {"status": "online", "started_at": "2026-03-10T08:00:00Z", "ended_at": "2026-03-10T10:00:00Z"},
            {"status": "away", "started_at": "2026-03-10T10:00:00Z", "ended_at": "2026-03-10T10:30:00Z"},
            {"status": "online", "started_at": "2026-03-11T11:00:00Z", "ended_at": None},
        ]
        assert body["days"][-2:] == [
            {
                "date": "2026-03-10",
                "online_seconds": 7200,
                "away_seconds": 1800,
                "first_seen": "2026-03-10T08:00:00Z",
                "last_seen": "2026-03-10T10:30:00Z",
            },
            {
                "date": "2026-03-11",
                "online_seconds": 3600,
                "away_seconds": 0,
                "first_seen": "2026-03-11T11:00:00Z",
                "last_seen": "2026-03-11T12:00:00Z",
            },
        ]
        assert body["days"][0] == {
            "date": "2026-03-05",
            "online_seconds": 0,
            "away_seconds": 0,
            "first_seen": None,
            "last_seen": None,
        }

    def test_in_a_time_zone_dates_are_whole_local_days_and_moments_carry_its_offset(self, user, user_client):
        seed(user)
        body = assert_json(
            user_client.get(MY_HISTORY, {"from": "2026-03-10", "to": "2026-03-10", "tz": "Europe/Berlin"}), 200
        )
        assert (body["tz"], body["from"], body["to"]) == (
            "Europe/Berlin",
            "2026-03-10T00:00:00+01:00",
            "2026-03-11T00:00:00+01:00",
        )
        assert body["intervals"][0] == {
            "status": "online",
            "started_at": "2026-03-10T09:00:00+01:00",
            "ended_at": "2026-03-10T11:00:00+01:00",
        }
        assert [(day["date"], day["online_seconds"], day["away_seconds"]) for day in body["days"]] == [
            ("2026-03-10", 7200, 1800)
        ]

    def test_today_as_both_from_and_to_is_the_whole_of_today_so_far(self, user, user_client):
        seed(user)
        body = assert_json(user_client.get(MY_HISTORY, {"from": "2026-03-11", "to": "2026-03-11"}), 200)
        assert (body["from"], body["to"]) == ("2026-03-11T00:00:00Z", "2026-03-12T00:00:00Z")
        assert body["intervals"] == [{"status": "online", "started_at": "2026-03-11T11:00:00Z", "ended_at": None}]
        assert [(day["date"], day["online_seconds"], day["last_seen"]) for day in body["days"]] == [
            ("2026-03-11", 3600, "2026-03-11T12:00:00Z")  # counted until now, not to the end of the day
        ]

    def test_a_date_as_to_includes_that_day_across_a_month_end(self, user, user_client):
        PresenceInterval.objects.create(
            user=user,
            status="online",
            started_at=datetime(2026, 2, 28, 23, 0, tzinfo=UTC),
            ended_at=datetime(2026, 3, 1, 1, 0, tzinfo=UTC),
        )
        body = assert_json(user_client.get(MY_HISTORY, {"from": "2026-02-27", "to": "2026-02-28"}), 200)
        assert body["to"] == "2026-03-01T00:00:00Z"
        assert [(day["date"], day["online_seconds"]) for day in body["days"]] == [
            ("2026-02-27", 0),
            ("2026-02-28", 3600),
        ]
        assert body["intervals"][0]["ended_at"] == "2026-03-01T00:00:00Z"  # clipped to the range

    def test_a_datetime_as_to_is_that_moment(self, user, user_client):
        seed(user)
        body = assert_json(user_client.get(MY_HISTORY, {"from": "2026-03-10", "to": "2026-03-10T09:00:00Z"}), 200)
        assert body["to"] == "2026-03-10T09:00:00Z"
        assert [(day["date"], day["online_seconds"]) for day in body["days"]] == [("2026-03-10", 3600)]

    @pytest.mark.parametrize(
        ("day", "tz", "hours", "to"),
        [
            ("2025-03-30", "Europe/London", 23, "2025-03-31T00:00:00+01:00"),
            ("2025-10-26", "Europe/London", 25, "2025-10-27T00:00:00Z"),
            ("2026-03-08", "America/New_York", 23, "2026-03-09T00:00:00-04:00"),
            ("2025-11-02", "America/New_York", 25, "2025-11-03T00:00:00-05:00"),
        ],
    )
    def test_a_dst_change_day_as_from_and_to_is_as_long_as_it_was(self, user, user_client, day, tz, hours, to):
        around = datetime.fromisoformat(day).replace(tzinfo=UTC)
        PresenceInterval.objects.create(
            user=user, status="online", started_at=around - timedelta(days=2), ended_at=around + timedelta(days=2)
        )
        body = assert_json(user_client.get(MY_HISTORY, {"from": day, "to": day, "tz": tz}), 200)
        assert body["to"] == to
        assert [(day["date"], day["online_seconds"]) for day in body["days"]] == [(day, hours * 3600)]

    def test_seconds_are_whole_and_rounded_down(self, user, user_client):
        PresenceInterval.objects.create(
            user=user, status="online", started_at=NOW - timedelta(hours=2), ended_at=NOW - timedelta(seconds=7199.9)
        )
        body = assert_json(user_client.get(MY_HISTORY), 200)
        assert body["days"][-1]["online_seconds"] == 0

    def test_datetimes_with_offsets_are_accepted_and_a_plus_sent_unescaped_too(self, user, user_client):
        seed(user)
        for value in ("2026-03-10T09:00:00+01:00", "2026-03-10T09:00:00 01:00", "2026-03-10T08:00:00Z"):
            body = assert_json(user_client.get(MY_HISTORY, {"from": value}), 200)
            assert body["from"] == "2026-03-10T08:00:00Z", value

    def test_a_login_then_an_away_report_through_the_api_shows_in_the_history(self, user):
        client = client_for(user)  # a login: online from now
        for minute in (2, 4):  # connected all along: a silence past the timeout would be a gap
            with time_machine.travel(NOW + timedelta(minutes=minute), tick=False):
                client.post(HEARTBEAT, {"status": "online"}, format="json")
        with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
            client.post(HEARTBEAT, {"status": "away"}, format="json")
        with time_machine.travel(NOW + timedelta(minutes=6), tick=False):
            body = assert_json(client.get(MY_HISTORY), 200)
        assert [(i["status"], i["ended_at"]) for i in body["intervals"]] == [
            ("online", "2026-03-11T12:05:00Z"),
            ("away", None),
        ]
        assert body["days"][-1]["online_seconds"] == 300
        assert body["days"][-1]["away_seconds"] == 60

    def test_without_a_token_is_401(self, api_client):
        assert_json_error(api_client.get(MY_HISTORY), 401)


BAD_HISTORY_QUERIES = [
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-13-01"}, "from"),
    ({"to": "2026-03-10T25:00:00Z"}, "to"),
    ({"from": "2026-03-10T09:00:00"}, "from"),  # no offset
    ({"from": "0001-01-01"}, "from"),
    ({"to": "9999-12-31T23:59:59+00:00"}, "to"),
    ({"from": "2026-03-11T12:00:00Z"}, "from"),  # from == to (now)
    ({"from": "2026-03-11", "to": "2026-03-10"}, "from"),
    ({"from": "2026-02-01"}, "from"),  # 38 days
    ({"from": "2026-02-01", "to": "2026-03-04"}, "from"),  # 32 days: the 4th is included
    ({"to": "2026-02-30"}, "to"),
    ({"to": "12/04/2026"}, "to"),
    ({"from": "2026-03-10", "to": "2026-03-09"}, "from"),
    ({"tz": "Mars/Olympus"}, "tz"),
    ({"tz": "../../etc/passwd"}, "tz"),
    ({"tz": "Europe"}, "tz"),
    ({"tz": "x" * 100}, "tz"),
]


class TestBadInput:
    @pytest.mark.parametrize(("query", "named"), BAD_HISTORY_QUERIES)
    def test_my_history_refuses_it_with_a_400_naming_the_parameter(self, user_client, query, named):
        body = assert_json_error(user_client.get(MY_HISTORY, query), 400)
        assert set(body) == {named}, body

    @pytest.mark.parametrize(("query", "named"), BAD_HISTORY_QUERIES[:4] + BAD_HISTORY_QUERIES[-4:-2])
    def test_the_admin_path_too(self, staff_client, user, query, named):
        body = assert_json_error(staff_client.get(history_url(user.pk), query), 400)
        assert set(body) == {named}, body

    def test_an_empty_parameter_is_as_if_absent(self, user_client):
        body = assert_json(user_client.get(MY_HISTORY, {"from": "", "to": "", "tz": ""}), 200)
        assert (body["tz"], body["from"]) == ("UTC", "2026-03-05T00:00:00Z")

    def test_exactly_31_days_is_fine(self, user_client):
        assert_json(user_client.get(MY_HISTORY, {"from": "2026-02-01", "to": "2026-03-04T00:00:00Z"}), 200)

    def test_a_whole_month_of_dates_is_31_days_and_one_day_more_is_a_400_that_says_so(self, user_client):
        body = assert_json(user_client.get(MY_HISTORY, {"from": "2025-12-01", "to": "2025-12-31"}), 200)
        assert (body["from"], body["to"], len(body["days"])) == ("2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z", 31)

        body = assert_json_error(user_client.get(MY_HISTORY, {"from": "2026-01-01", "to": "2026-02-01"}), 400)
        assert body == {
            "from": [
                "The range from `from` to `to` is at most 31 days, a date as `to` counting as its whole day: "
                "this one is 32 days."
            ]
        }

    def test_31_local_days_across_a_dst_change_are_31_days(self, user_client):
        # October 2025 in London was 31 days and an hour long: the clocks went back on the 26th.
        query = {"from": "2025-10-01", "to": "2025-10-31", "tz": "Europe/London"}
        body = assert_json(user_client.get(MY_HISTORY, query), 200)
        assert (body["from"], body["to"], len(body["days"])) == (
            "2025-10-01T00:00:00+01:00",
            "2025-11-01T00:00:00Z",
            31,
        )
        body = assert_json_error(user_client.get(MY_HISTORY, {**query, "to": "2025-11-01T00:30:00Z"}), 400)
        assert body["from"][0].endswith("this one is over 31 days.")


class TestAdminHistory:
    def test_staff_read_any_users_history(self, staff_client, user):
        seed(user)
        body = assert_json(staff_client.get(history_url(user.pk), {"tz": "Europe/Berlin"}), 200)
        assert body["from"] == "2026-03-05T00:00:00+01:00"
        assert len(body["intervals"]) == 3

    @pytest.mark.parametrize("bad_id", ["999999", "abc", "-1", "1.5"])
    def test_an_unknown_or_malformed_user_id_is_a_404(self, staff_client, bad_id):
        assert_json_error(staff_client.get(history_url(bad_id)), 404)

    def test_non_staff_get_403_even_for_their_own_id_and_anonymous_401(self, user_client, api_client, user):
        other = UserFactory()
        seed(other)
        assert_json_error(user_client.get(history_url(other.pk)), 403)
        assert_json_error(user_client.get(history_url(user.pk)), 403)
        assert_json_error(api_client.get(history_url(other.pk)), 401)


class TestPrivacy:
    def test_a_hidden_users_history_is_theirs_and_staffs_only(self, staff_client):
        hidden = UserFactory(share_presence=False)
        seed(hidden)
        hidden_client = client_for(hidden)
        assert_json_error(client_for(UserFactory()).get(history_url(hidden.pk)), 403)
        own = assert_json(hidden_client.get(MY_HISTORY), 200)
        staff = assert_json(staff_client.get(history_url(hidden.pk)), 200)
        assert len(own["intervals"]) == len(staff["intervals"]) >= 3
        assert own["intervals"] == staff["intervals"]
        assert own["days"][-2]["online_seconds"] == 7200


class TestTimeline:
    @pytest.fixture
    def counts(self):
        for minute in range(0, 24 * 60, 10):
            at = NOW - timedelta(hours=24) + timedelta(minutes=minute)
            PresenceCount.objects.create(at=at, online=minute % 7, away=1, offline=5)

    def test_defaults_to_the_last_24_hours_at_one_minute_steps(self, staff_client, counts):
        body = assert_json(staff_client.get(TIMELINE), 200)
        assert (body["from"], body["to"], body["step_seconds"]) == (
            "2026-03-10T12:00:00Z",
            "2026-03-11T12:00:00Z",
            60,
        )
        assert len(body["points"]) == 144  # one count every ten minutes: the empty minutes are left out
        assert body["points"][0] == {
            "at": "2026-03-10T12:00:00Z",
            "online": 0,
            "away": 1,
            "offline": 5,
            "partial": False,
        }

    def test_a_longer_step_averages_its_minutes(self, staff_client, counts):
        body = assert_json(staff_client.get(TIMELINE, {"step": "1h"}), 200)
        assert body["step_seconds"] == 3600
        assert len(body["points"]) == 24
        # Minutes 0, 10, ..., 50: online 0, 3, 6, 2, 5, 1: 17 / 6 = 2.83.
        assert body["points"][0] == {
            "at": "2026-03-10T12:00:00Z",
            "online": 3,
            "away": 1,
            "offline": 5,
            "partial": False,
        }

    @pytest.mark.parametrize(
        ("query", "named"),
        [
            ({"step": "2m"}, "step"),
            ({"step": "1M"}, "step"),
            ({"from": "2026-03-04T11:59:00Z"}, "step"),  # 10,081 minutes
            ({"from": "2026-02-01", "step": "1d"}, "from"),  # 38 days
            ({"from": "2026-03-11T12:00:00Z"}, "from"),
            ({"from": "not a date"}, "from"),
            ({"to": "2026-03-11T12:00:00"}, "to"),
        ],
    )
    def test_bad_input_is_a_400_naming_the_parameter(self, staff_client, query, named):
        body = assert_json_error(staff_client.get(TIMELINE, query), 400)
        assert set(body) == {named}, body

    def test_a_week_at_one_minute_steps_is_the_most(self, staff_client):
        assert_json(staff_client.get(TIMELINE, {"from": "2026-03-04T12:00:00Z"}), 200)
        assert_json(staff_client.get(TIMELINE, {"from": "2026-02-09", "to": "2026-03-11", "step": "1d"}), 200)
        assert_json(staff_client.get(TIMELINE, {"from": "2026-03-01", "to": "2026-03-07"}), 200)
        body = assert_json_error(staff_client.get(TIMELINE, {"from": "2026-03-01", "to": "2026-03-08"}), 400)
        assert body == {"step": ["11,520 points; at most 10,080: take a longer step or a shorter range."]}

    def test_a_date_as_from_and_to_is_that_whole_day_of_utc(self, staff_client, counts):
        body = assert_json(staff_client.get(TIMELINE, {"from": "2026-03-10", "to": "2026-03-10", "step": "1h"}), 200)
        assert (body["from"], body["to"]) == ("2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z")
        assert [point["at"][11:16] for point in body["points"]] == [f"{hour}:00" for hour in range(12, 24)]
        body = assert_json(staff_client.get(TIMELINE, {"to": "2026-03-10", "step": "1h"}), 200)
        assert (body["from"], body["to"]) == ("2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z")  # 24 hours before

    def test_from_is_moved_back_to_the_start_of_its_step(self, staff_client, counts):
        body = assert_json(staff_client.get(TIMELINE, {"from": "2026-03-11T07:12:30Z", "step": "15m"}), 200)
        assert body["from"] == "2026-03-11T07:00:00Z"
        assert body["points"][0]["at"] == "2026-03-11T07:00:00Z"
        body = assert_json(staff_client.get(TIMELINE, {"from": "2026-03-09T07:12:30+01:00", "step": "1d"}), 200)
        assert body["from"] == "2026-03-09T00:00:00Z"

    def test_non_staff_get_403_and_anonymous_401(self, user_client, api_client):
        assert_json_error(user_client.get(TIMELINE), 403)
        assert_json_error(api_client.get(TIMELINE), 401)


class TestLivePoint:
    """When the range holds the current minute, its step is the last point, `partial`, with
    the live count as that minute's: the timeline is never empty while the beat's first
    minute is not over, and ends at now, not at the last minute the beat recorded."""

    @staticmethod
    def people(staff):
        """Shown online: `staff` (a login now: the client returned) and one more; away: one;
        offline: three."""
        now = datetime.now(UTC)
        online, away = UserFactory(), UserFactory()
        for person in (online, away):
            presence.start_session(user=person, at=now - timedelta(minutes=1))
        presence.set_manual_status(user=away, status="away")
        UserFactory.create_batch(3)
        return client_for(staff)

    def test_the_current_minute_is_the_last_point_with_the_live_counts(self, clock, staff):
        staff_client = self.people(staff)
        for minute in range(1, 5):
            PresenceCount.objects.create(at=NOW - timedelta(minutes=minute), online=40, away=40, offline=40)
        clock.move_to(NOW + timedelta(seconds=30))

        points = assert_json(staff_client.get(TIMELINE, {"from": "2026-03-11T11:56:00Z"}), 200)["points"]
        live = assert_json(staff_client.get(SUMMARY), 200)

        assert [(point["at"][11:16], point["partial"]) for point in points] == [
            ("11:56", False),
            ("11:57", False),
            ("11:58", False),
            ("11:59", False),
            ("12:00", True),
        ]
        assert (live["online"], live["away"], live["offline"]) == (2, 1, 3)
        assert points[-1] == {"at": "2026-03-11T12:00:00Z", "online": 2, "away": 1, "offline": 3, "partial": True}

    def test_the_live_point_is_what_the_beat_records_and_stays_partial_once_it_has(self, clock, staff):
        staff_client = self.people(staff)
        clock.move_to(NOW + timedelta(seconds=20))
        before = assert_json(staff_client.get(TIMELINE), 200)["points"]  # no count recorded yet: one point
        tasks.record_presence_counts()
        after = assert_json(staff_client.get(TIMELINE), 200)["points"]

        recorded = PresenceCount.objects.get()
        assert (
            before
            == after
            == [
                {
                    "at": "2026-03-11T12:00:00Z",
                    "online": recorded.online,
                    "away": recorded.away,
                    "offline": recorded.offline,
                    "partial": True,
                }
            ]
        )
        assert (recorded.online, recorded.away, recorded.offline) == (2, 1, 3)

    def test_a_longer_step_so_far_takes_the_live_count_for_the_current_minute(self, clock, staff):
        staff_client = self.people(staff)
        for minute in range(10):
            PresenceCount.objects.create(at=NOW + timedelta(minutes=minute), online=10, away=0, offline=0)
        # The beat's count of the current minute: the live one stands for it (the last of a
        # minute wins), else the mean would be 92.
        PresenceCount.objects.create(at=NOW + timedelta(minutes=10), online=1000, away=0, offline=0)
        clock.move_to(NOW + timedelta(minutes=10, seconds=30))
        assert_json(staff_client.post(HEARTBEAT), 200)  # the staff member is still there; the others timed out

        body = assert_json(staff_client.get(TIMELINE, {"from": "2026-03-11T11:45:00Z", "step": "15m"}), 200)
        live = assert_json(staff_client.get(SUMMARY), 200)

        # Online (10 x 10 + 1) / 11 = 9.2; offline 5 / 11 = 0.45.
        assert (live["online"], live["away"], live["offline"]) == (1, 0, 5)
        assert body["points"] == [{"at": "2026-03-11T12:00:00Z", "online": 9, "away": 0, "offline": 0, "partial": True}]

    @pytest.mark.parametrize(
        ("moment", "query"),
        [
            (NOW + timedelta(seconds=30), {"to": "2026-03-11T12:00:00Z"}),  # ends where the current minute starts
            (NOW + timedelta(seconds=30), {"to": "2026-03-11T11:00:00Z"}),
            (NOW + timedelta(seconds=30), {"from": "2026-03-10", "to": "2026-03-10"}),
            (NOW, {}),  # to: now, on the minute: the current minute is not in the range yet
        ],
    )
    def test_a_range_that_ended_has_no_partial_point(self, clock, staff_client, moment, query):
        PresenceCount.objects.create(at=datetime(2026, 3, 10, 12, 0, tzinfo=UTC), online=4, away=5, offline=6)
        PresenceCount.objects.create(at=NOW - timedelta(minutes=61), online=4, away=5, offline=6)
        PresenceCount.objects.create(at=NOW - timedelta(minutes=1), online=4, away=5, offline=6)
        clock.move_to(moment)
        points = assert_json(staff_client.get(TIMELINE, query), 200)["points"]
        assert points
        assert all(point["partial"] is False for point in points)
        assert {(point["online"], point["away"], point["offline"]) for point in points} == {(4, 5, 6)}

    def test_a_date_as_to_reaching_past_now_ends_at_the_live_point(self, clock, staff):
        staff_client = self.people(staff)
        PresenceCount.objects.create(at=NOW, online=40, away=40, offline=40)
        clock.move_to(NOW + timedelta(seconds=30))
        body = assert_json(staff_client.get(TIMELINE, {"from": "2026-03-11", "to": "2026-03-11", "step": "5m"}), 200)
        assert body["to"] == "2026-03-12T00:00:00Z"
        assert body["points"] == [
            {"at": "2026-03-11T12:00:00Z", "online": 2, "away": 1, "offline": 3, "partial": True}  # 12:00 is live
        ]

    def test_the_cache_never_keeps_a_partial_point(self, clock, staff):
        from django.core.cache import cache

        from users.api.history import CACHE_KEY

        clock.move_to(NOW - timedelta(seconds=30))  # 11:59:30
        staff_client = self.people(staff)
        for minute in range(60, 1, -1):  # 11:00-11:58: 11:59 is not recorded yet
            PresenceCount.objects.create(at=NOW - timedelta(minutes=minute), online=7, away=7, offline=7)
        query = {"from": "2026-03-11T11:00:00Z", "to": "2026-03-11T13:00:00Z"}
        first = assert_json(staff_client.get(TIMELINE, query), 200)["points"]
        tasks.record_presence_counts()  # 11:59, as the beat records it...
        PresenceCount.objects.filter(at=NOW - timedelta(minutes=1)).update(online=70)  # ...told apart
        clock.move_to(NOW + timedelta(minutes=3, seconds=30))  # 12:03:30: 11:00-12:00 is settled
        second = assert_json(staff_client.get(TIMELINE, query), 200)["points"]

        assert first[-1] == {"at": "2026-03-11T11:59:00Z", "online": 2, "away": 1, "offline": 3, "partial": True}
        assert second[59] == {"at": "2026-03-11T11:59:00Z", "online": 70, "away": 1, "offline": 3, "partial": False}
        assert [(point["at"][11:16], point["partial"]) for point in second[60:]] == [("12:03", True)]
        cached = cache.get(CACHE_KEY.format(step=60, hour=int(datetime(2026, 3, 11, 11, tzinfo=UTC).timestamp())))
        assert cached.count('"at"') == 60
        assert '"partial":true' not in cached


class TestLastActiveInLists:
    def test_shown_for_away_users_only_and_never_through_privacy(self, staff_client):
        away, online, hidden = (
            UserFactory(username="a-away"),
            UserFactory(username="b-on"),
            UserFactory(username="c-hid"),
        )
        UserFactory(username="d-off")
        for person in (away, online, hidden):
            presence.start_session(user=person, at=NOW - timedelta(minutes=1))
        presence.set_share_presence(user=hidden, share=False)
        for person in (away, hidden):
            presence.set_manual_status(user=person, status="away")
        active = "2026-03-11T11:59:00Z"
        viewer = client_for(UserFactory(username="e-viewer"))

        directory = {row["username"]: row for row in assert_json(viewer.get(ALL_USERS), 200)["results"]}
        admin = {row["username"]: row for row in assert_json(staff_client.get(ADMIN_USERS), 200)["results"]}

        assert {name: directory[name]["last_active"] for name in ("a-away", "b-on", "c-hid", "d-off")} == {
            "a-away": active,
            "b-on": None,  # online: active within PRESENCE_AWAY_AFTER by definition
            "c-hid": None,  # hidden from other users
            "d-off": None,
        }
        assert admin["c-hid"]["last_active"] == active  # staff see the truth
        assert admin["b-on"]["last_active"] is None

    def test_the_hidden_user_sees_their_own(self):
        hidden = UserFactory(share_presence=False)
        presence.start_session(user=hidden, at=NOW - timedelta(minutes=1))
        presence.set_manual_status(user=hidden, status="away")
        client = client_for(hidden)
        rows = {row["id"]: row for row in client.get(ALL_USERS).json()["results"]}
        assert rows[hidden.pk]["online_status"] == "away"
        assert rows[hidden.pk]["last_active"] is not None

    def test_heartbeats_of_an_online_user_leave_the_list_unchanged(self, staff, user, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        staff_client, user_client = client_for(staff), client_for(user)
        etag = staff_client.get(ADMIN_USERS)["ETag"]
        with time_machine.travel(NOW + timedelta(seconds=30), tick=False):
            user_client.post(HEARTBEAT)
        with time_machine.travel(NOW + timedelta(seconds=60), tick=False):
            user_client.patch(ME, {"first_name": user.first_name}, format="json")  # a request: real input
            assert staff_client.get(ADMIN_USERS, HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_the_timeline_points_built_by_hand_are_what_their_serializer_says():
    from users.api.serializers.history import PointSerializer, timeline_points
    from users.selectors.history import Point

    points = [
        Point(NOW + timedelta(minutes=minute, microseconds=minute * 1001), 10 + minute, minute, 100 - minute)
        for minute in range(5)
    ]
    points.append(Point(NOW + timedelta(minutes=5), 7, 8, 9, partial=True))
    by_hand = timeline_points(points)
    assert by_hand == PointSerializer(points, many=True).data
    assert [point["partial"] for point in by_hand] == [False] * 5 + [True]


class TestTimelineCache:
    """Hours that are over are cached (their counts never change again); the answer is the
    same with or without the cache."""

    @pytest.fixture
    def minutes(self):
        start = NOW - timedelta(hours=5)
        for minute in range(5 * 60):
            PresenceCount.objects.create(at=start + timedelta(minutes=minute), online=minute, away=1, offline=2)
        return start

    def test_a_settled_hour_is_answered_from_the_cache_and_the_current_hour_from_the_database(
        self, staff_client, minutes
    ):
        query = {"from": (minutes + timedelta(minutes=30)).isoformat(), "step": "1m"}
        first = assert_json(staff_client.get(TIMELINE, query), 200)["points"]
        # Changing counts of a past hour is not something the system does: here it shows
        # where each point came from.
        PresenceCount.objects.filter(at__gte=NOW - timedelta(hours=3)).update(online=99_999)
        second = assert_json(staff_client.get(TIMELINE, query), 200)["points"]

        changed = [point["at"] for point in second if point["online"] == 99_999]
        assert first == [
            {
                "at": f"{(minutes + timedelta(minutes=m)).isoformat()[:19]}Z",
                "online": m,
                "away": 1,
                "offline": 2,
                "partial": False,
            }
            for m in range(30, 5 * 60)
        ]
        # 08:00-11:00 are settled and cached (07:30-08:00 is an edge, read each time); 11:00-12:00 is not.
        assert changed[0] == "2026-03-11T11:00:00Z"
        assert len(changed) == 60
        assert [point for point in second if point["online"] != 99_999] == first[: len(first) - 60]

    def test_the_answer_is_the_same_whatever_the_cache_holds(self, staff_client, minutes):
        from users.api.serializers.history import timeline_points
        from users.selectors.history import timeline

        for query in [{"from": minutes.isoformat(), "step": "5m"}, {"from": "2026-03-11T07:10:00Z", "step": "15m"}]:
            cold = assert_json(staff_client.get(TIMELINE, query), 200)
            warm = assert_json(staff_client.get(TIMELINE, query), 200)
            start = datetime.fromisoformat(cold["from"])
            whole = timeline(start=start, end=NOW, step=timedelta(seconds=cold["step_seconds"]))
            assert cold == warm
            assert cold["points"] == timeline_points(whole)

    def test_without_redis_the_timeline_is_read_from_the_database(self, staff_client, minutes, settings, caplog):
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
                "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
            }
        }
        body = assert_json(staff_client.get(TIMELINE, {"from": minutes.isoformat(), "step": "1h"}), 200)
        assert [point["online"] for point in body["points"]] == [60 * hour + 30 for hour in range(5)]  # 29.5 up
        assert "event=timeline_cache_unavailable error=ConnectionError" in caplog.text
