"""What the notifier keeps of an endpoint's answer (``workers.notifier.answers``), as pure code."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workers.notifier.answers import describe, retry_after_s, sanitise

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        # HTTP dates are GMT: one without its zone is still UTC, never a crash.
        ("Sat, 01 Mar 2025 12:00:30", 30.0),
        ("Sat, 01 Mar 2025 13:00:30 +0100", 30.0),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),  # in the past: now
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(value: str, seconds: float) -> None:
    assert retry_after_s(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-5", "1.5", "²", "Sat, 01 Mar 99999 12:00:30 GMT", "Sat, 99 Foo", "\x00"],
)
def test_a_retry_after_that_is_neither_is_ignored(value: str | None) -> None:
    assert retry_after_s(value, NOW) is None


def test_an_answer_is_kept_as_at_most_a_kib_of_valid_text_without_nul() -> None:
    assert sanitise(b'\x00{"a": "\xff\xfe"}\x00') == '\ufffd{"a": "\ufffd\ufffd"}\ufffd'
    assert sanitise(b"x" * 100_000) == "x" * 1024
    # A character cut at the limit becomes U+FFFD, not an error.
    assert sanitise("é".encode() * 1024) == "é" * 512
    assert sanitise(b"\xc3" + b"a") == "\ufffda"


def test_an_error_is_its_class_and_a_short_clean_message() -> None:
    assert describe(ValueError("bad\x00value")) == "ValueError: bad\ufffdvalue"
    assert describe(TimeoutError()) == "TimeoutError"
    assert len(describe(RuntimeError("x" * 5000))) == 300
    assert describe(OSError("\udcff broken")) == "OSError: ? broken"
