"""Logging set-up shared by every role: one JSON object a line, or text for a person.

Every line carries the ids bound in ``workers.core.correlation`` (payment, event, correlation),
so ``grep <correlation id>`` over every role's log shows one payment's whole path. Whatever
the format, secrets (API keys, bearer tokens, webhook secrets, passwords in URLs) are masked
before a line is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

from workers.core import correlation

LogFormat = Literal["auto", "json", "text"]
FORMATS: Final = ("auto", "json", "text")
REDACTED: Final = "[redacted]"

_SECRETS: Final = (
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"\b(sk_live_|whsec_)[A-Za-z0-9_\-+/=]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\g<1>{REDACTED}@"),
    (re.compile(r"(?i)\b(password\s*=\s*)[^\s&]+"), rf"\g<1>{REDACTED}"),
)


# Built once: json.dumps with options builds a new encoder for every line.
_LINE: Final = json.JSONEncoder(ensure_ascii=False, default=str)


# Every pattern above needs one of these words: most lines hold none, and one search costs a
# tenth of the four substitutions.
_MAYBE_SECRET: Final = re.compile(r"(?i)bearer|sk_live_|whsec_|://|password")


def redact(text: str) -> str:
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def setup_logging(
    level: str, role: str, fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Send every log line of this process to ``stream`` (stderr), as ``fmt`` says.

    ``auto`` is text on a terminal and JSON otherwise (a file, a pipe, a container's log).
    """
    out = stream or sys.stderr
    chosen = ("text" if out.isatty() else "json") if fmt == "auto" else fmt
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(role) if chosen == "json" else TextFormatter(role))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _fields(record: logging.LogRecord) -> dict[str, str]:
    """The bound ids, overridden by any passed to this one call (``extra=``)."""
    fields = dict(correlation.current())
    for name in correlation.FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = str(value)
    return fields


def _message(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + formatter.formatException(record.exc_info)
    return redact(text)


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "role": self.role,
            "pid": self.pid,
            "logger": record.name,
            "message": _message(self, record),
            **_fields(record),
        }
        return _LINE.encode(line)


class TextFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {self.role} {record.name}"
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        tail = f" [{fields}]" if fields else ""
        return f"{head}: {_message(self, record)}{tail}"
