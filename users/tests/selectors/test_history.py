"""Presence history, read side (users.selectors.history): a user's intervals clipped to a
range, per-day totals in a time zone (midnights, DST days), open intervals; the timeline."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from users.models import PresenceCount, PresenceInterval
from users.selectors.history import Interval, Point, live_minute_counts, minute_counts, timeline, user_history
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600


def at(text):
    return datetime.fromisoformat(text)


def interval(user, status, started, ended=None):
    PresenceInterval.objects.create(user=user, status=status, started_at=at(started), ended_at=ended and at(ended))


def berlin_midnight(day):
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=BERLIN)


def totals(history):
    return {str(day.date): (day.online_seconds, day.away_seconds) for day in history.days}


class TestPerDayTotals:
    def test_an_interval_across_a_local_midnight_is_split_at_it(self):
        user = UserFactory()
        # 23:30 to 01:30 in Berlin (UTC+1 in March).
        interval(user, "online", "2026-03-10T22:30:00+00:00", "2026-03-11T00:30:00+00:00")
        history = user_history(
            user=user,
            start=berlin_midnight("2026-03-10"),
            end=berlin_midnight("2026-03-12"),
            tz=BERLIN,
            now=at("2026-04-01T00:00:00+00:00"),
        )
        assert totals(history) == {"2026-03-10": (30 * 60, 0), "2026-03-11": (90 * 60, 0)}
        first, second = history.days
        assert (first.first_seen, first.last_seen) == (at("2026-03-10T22:30:00+00:00"), berlin_midnight("2026-03-11"))
        assert (second.first_seen, second.last_seen) == (berlin_midnight("2026-03-11"), at("2026-03-11T00:30:00+00:00"))

    @pytest.mark.parametrize(
        ("day", "hours"),
        [("2026-10-25", 25), ("2026-03-29", 23), ("2026-10-24", 24)],
    )
    def test_a_dst_change_day_has_its_real_length(self, day, hours):
        user = UserFactory()
        local = berlin_midnight(day)
        interval(user, "online", (local - timedelta(days=1)).isoformat(), (local + timedelta(days=2)).isoformat())
        history = user_history(
            user=user,
            start=local,
            end=datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=BERLIN),
            tz=BERLIN,
            now=at("2027-01-01T00:00:00+00:00"),
        )
        assert totals(history) == {day: (hours * HOUR, 0)}

    def test_the_days_around_the_autumn_change_with_online_and_away(self):
        user = UserFactory()
        # From 14:00 CEST on the 24th to 13:00 CET on the 26th, away for the first hour after
        # midnight of the 25th (00:00-01:00 CEST).
        interval(user, "online", "2026-10-24T12:00:00+00:00", "2026-10-24T22:00:00+00:00")
        interval(user, "away", "2026-10-24T22:00:00+00:00", "2026-10-24T23:00:00+00:00")
        interval(user, "online", "2026-10-24T23:00:00+00:00", "2026-10-26T12:00:00+00:00")
        history = user_history(
            user=user,
            start=berlin_midnight("2026-10-24"),
            end=berlin_midnight("2026-10-27"),
            tz=BERLIN,
            now=at("2027-01-01T00:00:00+00:00"),
        )
        assert totals(history) == {
            "2026-10-24": (10 * HOUR, 0),
            "2026-10-25": (24 * HOUR, 1 * HOUR),
            "2026-10-26": (13 * HOUR, 0),
        }

    def test_every_local_day_of_the_range_is_listed_even_empty(self):
        user = UserFactory()
        history = user_history(
            user=user,
            start=berlin_midnight("2026-03-01"),
            end=berlin_midnight("2026-03-08"),
            tz=BERLIN,
            now=at("2026-04-01T00:00:00+00:00"),
        )
        assert [str(day.date) for day in history.days] == [f"2026-03-0{n}" for n in range(1, 8)]
        assert all(day.first_seen is None and day.online_seconds == 0 for day in history.days)


class TestIntervals:
    def test_intervals_are_clipped_to_the_range(self):
        user = UserFactory()
        interval(user, "online", "2026-03-10T08:00:00+00:00", "2026-03-10T12:00:00+00:00")
        interval(user, "away", "2026-03-10T12:00:00+00:00", "2026-03-10T13:00:00+00:00")
        interval(user, "online", "2026-03-10T20:00:00+00:00", "2026-03-10T21:00:00+00:00")  # after the range
        history = user_history(
            user=user,
            start=at("2026-03-10T10:00:00+00:00"),
            end=at("2026-03-10T12:30:00+00:00"),
            tz=ZoneInfo("UTC"),
            now=at("2026-04-01T00:00:00+00:00"),
        )
        assert history.intervals == [
            Interval("online", at("2026-03-10T10:00:00+00:00"), at("2026-03-10T12:00:00+00:00")),
            Interval("away", at("2026-03-10T12:00:00+00:00"), at("2026-03-10T12:30:00+00:00")),
        ]
        assert totals(history) == {"2026-03-10": (2 * HOUR, 30 * 60)}

    def test_an_open_interval_runs_until_now_and_is_still_so(self):
        now = at("2026-03-10T12:00:00+00:00")
        user = UserFactory(online_status="online", last_seen=now - timedelta(seconds=20), last_active=now)
        interval(user, "online", "2026-03-10T11:00:00+00:00")
        history = user_history(user=user, start=now - timedelta(days=1), end=now, tz=ZoneInfo("UTC"), now=now)
        assert history.intervals == [Interval("online", at("2026-03-10T11:00:00+00:00"), None)]
        assert totals(history) == {"2026-03-09": (0, 0), "2026-03-10": (HOUR, 0)}
        assert history.days[-1].last_seen == now

    def test_an_open_interval_of_a_user_who_timed_out_before_the_sweep_ends_at_the_timeout(self):
        now = at("2026-03-10T12:00:00+00:00")
        seen = now - timedelta(minutes=10)
        user = UserFactory(online_status="online", last_seen=seen, last_active=seen)
        interval(user, "online", "2026-03-10T11:00:00+00:00")
        history = user_history(user=user, start=now - timedelta(hours=2), end=now, tz=ZoneInfo("UTC"), now=now)
        assert history.intervals == [Interval("online", at("2026-03-10T11:00:00+00:00"), seen + timedelta(seconds=120))]

    def test_an_open_interval_cut_by_a_range_that_ends_before_now_ends_there(self):
        now = at("2026-03-10T12:00:00+00:00")
        user = UserFactory(online_status="online", last_seen=now, last_active=now)
        interval(user, "online", "2026-03-09T11:00:00+00:00")
        end = at("2026-03-10T00:00:00+00:00")
        history = user_history(user=user, start=end - timedelta(hours=2), end=end, tz=ZoneInfo("UTC"), now=now)
        assert history.intervals == [Interval("online", end - timedelta(hours=2), end)]

    def test_a_range_reaching_past_now_stops_at_now(self):
        now = at("2026-03-10T12:00:00+00:00")
        user = UserFactory(online_status="online", last_seen=now, last_active=now)
        interval(user, "away", "2026-03-10T11:30:00+00:00")
        history = user_history(
            user=user, start=now - timedelta(hours=1), end=now + timedelta(days=2), tz=ZoneInfo("UTC"), now=now
        )
        assert history.intervals == [Interval("away", at("2026-03-10T11:30:00+00:00"), None)]
        assert totals(history) == {"2026-03-10": (0, 30 * 60)}

    def test_other_users_intervals_are_not_read(self):
        user, other = UserFactory(), UserFactory()
        interval(other, "online", "2026-03-10T08:00:00+00:00", "2026-03-10T09:00:00+00:00")
        history = user_history(
            user=user,
            start=at("2026-03-10T00:00:00+00:00"),
            end=at("2026-03-11T00:00:00+00:00"),
            tz=ZoneInfo("UTC"),
            now=at("2026-04-01T00:00:00+00:00"),
        )
        assert history.intervals == []


class TestTimeline:
    def test_points_are_the_rounded_mean_of_their_minutes_and_empty_steps_are_left_out(self):
        start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
        for minute, online in enumerate([1, 2, 2, 3, 3]):
            PresenceCount.objects.create(at=start + timedelta(minutes=minute), online=online, away=1, offline=10)
        PresenceCount.objects.create(at=start + timedelta(minutes=20), online=7, away=0, offline=4)
        PresenceCount.objects.create(at=start + timedelta(hours=2), online=9, away=9, offline=9)  # after the end

        points = timeline(start=start, end=start + timedelta(hours=1), step=timedelta(minutes=5))

        assert [(p.at, p.online, p.away, p.offline) for p in points] == [
            (start, 2, 1, 10),  # (1 + 2 + 2 + 3 + 3) / 5 = 2.2
            (start + timedelta(minutes=20), 7, 0, 4),
        ]

    def test_half_way_means_round_up(self):
        start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
        for minute, online in enumerate([2, 3, 4, 5]):
            PresenceCount.objects.create(at=start + timedelta(minutes=minute), online=online, away=minute, offline=0)

        [two_minutes, next_two] = timeline(start=start, end=start + timedelta(minutes=4), step=timedelta(minutes=2))

        assert (two_minutes.online, two_minutes.away) == (3, 1)  # 2.5 and 0.5
        assert (next_two.online, next_two.away) == (5, 3)  # 4.5 and 2.5

    def test_with_now_the_step_holding_it_is_partial_and_its_minute_the_live_count(self):
        start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
        now = start + timedelta(minutes=6, seconds=40)
        UserFactory(online_status="online", last_seen=now, last_active=now)
        UserFactory()
        for minute in range(8):  # 12:06 is the current minute, 12:07 a clock ahead of this one
            PresenceCount.objects.create(at=start + timedelta(minutes=minute), online=9, away=9, offline=9)

        read = timeline(start=start, end=start + timedelta(hours=1), step=timedelta(minutes=5), now=now)
        settled = timeline(start=start, end=start + timedelta(hours=1), step=timedelta(minutes=5))

        assert read == [
            Point(start, 9, 9, 9),
            Point(start + timedelta(minutes=5), 5, 5, 5, partial=True),  # (9 + 1) / 2, (9 + 0) / 2, (9 + 1) / 2
        ]
        assert minute_counts(now=now) == {"online": 1, "away": 0, "offline": 1}
        assert [point.partial for point in settled] == [False, False]
        assert timeline(start=start, end=start + timedelta(minutes=6), step=timedelta(minutes=1), now=now)[-1] == (
            Point(start + timedelta(minutes=5), 9, 9, 9)  # the range ends before the current minute
        )


class TestTheLiveCount:
    """The live point's count is kept a few seconds for every process, within its minute."""

    START = datetime(2026, 3, 10, 12, 0, 10, tzinfo=UTC)

    def arrive(self, now):
        return UserFactory(online_status="online", last_seen=now, last_active=now)

    def test_a_count_a_few_seconds_old_serves_without_a_query(self):
        self.arrive(self.START)
        assert live_minute_counts(now=self.START) == {"online": 1, "away": 0, "offline": 0}
        self.arrive(self.START)
        with CaptureQueriesContext(connection) as queries:
            assert live_minute_counts(now=self.START + timedelta(seconds=4))["online"] == 1
        assert len(queries) == 0

    def test_is_counted_again_once_older_than_its_age(self):
        self.arrive(self.START)
        live_minute_counts(now=self.START)
        self.arrive(self.START)
        assert live_minute_counts(now=self.START + timedelta(seconds=5))["online"] == 2

    def test_is_counted_again_in_a_new_minute_however_recent(self):
        just_before = datetime(2026, 3, 10, 12, 0, 59, tzinfo=UTC)
        self.arrive(just_before)
        live_minute_counts(now=just_before)
        self.arrive(just_before)
        assert live_minute_counts(now=just_before + timedelta(seconds=2))["online"] == 2

    def test_a_count_taken_after_now_does_not_serve_an_earlier_now(self):
        self.arrive(self.START)
        live_minute_counts(now=self.START + timedelta(seconds=3))
        self.arrive(self.START)
        assert live_minute_counts(now=self.START)["online"] == 2

    def test_the_timeline_ending_now_reads_the_kept_count(self):
        start, now = self.START.replace(second=0), self.START + timedelta(minutes=6)
        self.arrive(now)
        first = timeline(start=start, end=start + timedelta(hours=1), step=timedelta(minutes=1), now=now)
        self.arrive(now)
        again = timeline(start=start, end=start + timedelta(hours=1), step=timedelta(minutes=1), now=now)
        assert first[-1] == again[-1] == Point(now.replace(second=0), 1, 0, 0, partial=True)

    def test_without_the_cache_it_counts_every_time(self, settings):
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
        }
        self.arrive(self.START)
        assert live_minute_counts(now=self.START)["online"] == 1
        self.arrive(self.START)
        assert live_minute_counts(now=self.START)["online"] == 2
