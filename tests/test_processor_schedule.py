"""The reconciler's schedule rules, pure: no database, no gateway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.core.config import ProcessorSettings
from workers.processor.schedule import recheck_after_s, watch_over

CONFIG = ProcessorSettings(recheck_first_s=60, recheck_max_s=3600, late_charge_window_s=86_400)
FAILED_AT = datetime(2024, 1, 1, tzinfo=UTC)


def test_rechecks_double_from_the_first_delay_up_to_the_last() -> None:
    delays = [recheck_after_s(CONFIG, checks) for checks in range(8)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_a_check_count_past_any_float_stays_at_the_last_delay() -> None:
    # A watch that lasts for years counts thousands of checks; 2**n must not overflow a float.
    assert recheck_after_s(CONFIG, 5000) == 3600


def test_the_watch_lasts_its_window_from_the_failure() -> None:
    assert not watch_over(CONFIG, FAILED_AT, FAILED_AT + timedelta(hours=23, minutes=59))
    assert not watch_over(CONFIG, FAILED_AT, FAILED_AT + timedelta(days=1))
    assert watch_over(CONFIG, FAILED_AT, FAILED_AT + timedelta(days=1, seconds=1))
