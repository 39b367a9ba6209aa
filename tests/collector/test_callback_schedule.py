"""The completion callbacks' retry schedule: fast at first, hourly after, about a day."""

from __future__ import annotations

from kriten_collector.callback_schedule import retry_delay, total_seconds
from kriten_collector.settings import CollectorSettings
from kriten_common.backoff import delay_level


def test_the_waits_grow_to_an_hour() -> None:
    assert [retry_delay(n, first=5) for n in range(1, 8)] == [5, 30, 120, 600, 3600, 3600, 3600]


def test_a_short_first_delay_for_tests_changes_only_the_first_wait() -> None:
    assert [retry_delay(n, first=1) for n in range(1, 4)] == [1, 30, 120]


def test_the_default_attempts_span_about_a_day() -> None:
    settings = CollectorSettings()
    hours = total_seconds(settings.callback_max_attempts, first=5) / 3600
    assert 23 < hours < 27


def test_every_wait_has_a_delay_queue_of_its_length() -> None:
    # The consumer rounds a delay up to a queue's: none of the schedule's is rounded.
    for attempt in range(1, 10):
        delay = retry_delay(attempt, first=5)
        assert delay_level(delay) == delay
