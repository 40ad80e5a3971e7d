"""What an endpoint answered, made safe to store: its bytes, its errors, its ``Retry-After``.

Everything here comes from a server FlowPay does not control: it is bounded and sanitised before
it reaches the database (PostgreSQL's text refuses NUL and invalid UTF-8) or a log line.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

HEAD_BYTES: Final = 1024  # of an answer's body, kept with the attempt
ERROR_CHARS: Final = 300  # of an error's message
REPLACEMENT: Final = "\ufffd"


def sanitise(raw: bytes | str, limit: int = HEAD_BYTES) -> str:
    """The first ``limit`` bytes (or characters) of ``raw`` as UTF-8 text, NUL and invalid
    sequences replaced by U+FFFD."""
    if isinstance(raw, bytes):
        text = raw[:limit].decode("utf-8", "replace")
    else:  # lone surrogates cannot be encoded: replaced as well
        text = raw[:limit].encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", REPLACEMENT)


def describe(exc: BaseException) -> str:
    """An attempt's error: the exception's class and a short message."""
    message = str(exc)
    return sanitise(
        f"{type(exc).__name__}: {message}" if message else type(exc).__name__, ERROR_CHARS
    )


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: a number of seconds or an HTTP date.

    HTTP dates are GMT, so one without a zone is read as UTC; a value that is neither is
    ignored (None), never an error.
    """
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
