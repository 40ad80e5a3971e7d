"""When the reconciler looks again, and for how long it watches: pure rules, no I/O."""

from __future__ import annotations

from datetime import datetime

from workers.core.config import ProcessorSettings


def recheck_after_s(config: ProcessorSettings, checks: int) -> float:
    """The delay before the next check of an unknown outcome already deferred ``checks`` times:
    ``recheck_first_s`` doubling up to ``recheck_max_s``."""
    return float(min(config.recheck_first_s * 2 ** min(checks, 64), config.recheck_max_s))


def watch_over(config: ProcessorSettings, failed_at: datetime, now: datetime) -> bool:
    """True once a failed payment's late-charge watch has lasted its window.

    Measured from the fixed time of failure, never from the watch's own last check, so the
    watch ends however often it looked.
    """
    return (now - failed_at).total_seconds() > config.late_charge_window_s
