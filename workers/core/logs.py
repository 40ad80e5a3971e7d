"""Logging set-up shared by every role: one JSON object a line, or text for a person.

Every line carries the ids bound in ``workers.core.correlation`` (payment, event, correlation),
so ``grep <correlation id>`` over every role's log shows one payment's whole path. Whatever
the format, secrets (API keys, bearer and Basic credentials, webhook secrets, passwords in
URLs, conninfo and JSON) are masked in the message and in those ids before a line is written.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from workers.core import correlation

LogFormat = Literal["auto", "json", "text"]
FORMATS: Final = ("auto", "json", "text")
REDACTED: Final = "[redacted]"
# In a connection string shown whole: a URL has no room for brackets.
PASSWORD_MASK: Final = "***"  # noqa: S105 (what a password is shown as, not one)
_URL_SCHEME: Final = re.compile(r"(?i)postgres(?:ql)?://")

_QUOTED: Final = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"


def _masked_value(match: re.Match[str]) -> str:
    """The key as it was, its value (bare or quoted, as JSON or conninfo write it) masked."""
    value = match[2]
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match[1]}{quote}{REDACTED}{quote}"


def _masked_basic(match: re.Match[str]) -> str:
    """HTTP Basic credentials are base64 of ``user:password``; other words after "basic" stay."""
    try:
        decoded = base64.b64decode(match[2] + "=" * (-len(match[2]) % 4), validate=True)
    except ValueError:
        return match[0]
    return f"{match[1]}{REDACTED}" if b":" in decoded else match[0]


_SECRETS: Final = (
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)\b(basic\s+)([A-Za-z0-9+/]+={0,2})"), _masked_basic),
    (re.compile(r"\b(sk_live_|whsec_)[A-Za-z0-9_\-+/=]+"), rf"\g<1>{REDACTED}"),
    # A URL's user:password@ (any scheme, any case); greedy up to the host's @, so that an @
    # left unencoded in a password does not leave the rest of it out.
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^\s/]+@"), rf"\g<1>{REDACTED}@"),
    # password=..., ?password=..., PGPASSWORD=..., "password": "...", 'db_password': '...'.
    (
        re.compile(rf"(?i)(\w*password\w*[\"']?\s*[:=]\s*)({_QUOTED}|[^\s&\"',;}}]+)"),
        _masked_value,
    ),
)


# Built once: json.dumps with options builds a new encoder for every line.
_LINE: Final = json.JSONEncoder(ensure_ascii=False, default=str)


# Every pattern above needs one of these words: most lines hold none, and one search costs a
# tenth of the substitutions. It runs on the lower-cased text: the same search ignoring case
# is several times slower, and it runs for the message and each id of every line.
_MAYBE_SECRET: Final = re.compile(r"bearer|basic|sk_live_|whsec_|://|password")
# A field value that is not an id a person could read (too long, control characters).
INVALID: Final = "[invalid]"


def redact(text: str) -> str:
    if _MAYBE_SECRET.search(text.lower()) is None:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def mask_conninfo(conninfo: str) -> str:
    """A PostgreSQL connection string fit to print, its password masked: what every output
    that shows the database's address prints.

    libpq's own parser says whether there is a password, in any of its forms (a URL's
    ``user:password@``, its ``?password=``, a key=value ``password=...``, quoted or not); a
    URL stays a URL. A string libpq cannot read is not shown at all.
    """
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unreadable connection string, not shown)"
    if "password" not in params:
        return conninfo
    if _URL_SCHEME.match(conninfo):
        masked = _masked_url(conninfo)
        if conninfo_to_dict(masked).get("password") == PASSWORD_MASK:
            return masked
    return make_conninfo(conninfo, password=PASSWORD_MASK)


def _masked_url(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if colon:
        userinfo = f"{user}:{PASSWORD_MASK}"
    query = "&".join(_masked_parameter(pair) for pair in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hosts}", query=query))


def _masked_parameter(pair: str) -> str:
    name = pair.partition("=")[0]
    return f"{name}={PASSWORD_MASK}" if unquote(name) == "password" else pair


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
    # httpx logs every request's URL at INFO (a webhook endpoint's, with whatever it holds),
    # and httpcore every step of it at DEBUG: FlowPay's own lines say what was called.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _fields(record: logging.LogRecord) -> dict[str, str]:
    """The bound ids, overridden by any passed to this one call (``extra=``).

    They come from outside too (a caller's X-Request-Id, a Kafka message's headers), so each
    is masked like a message, and one that is no readable id is replaced: it could fill the
    line, or forge another one in the text format.
    """
    fields = dict(correlation.current())
    for name in correlation.FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = str(value)
    joined = " ".join(fields.values())
    if correlation.readable(joined) and _MAYBE_SECRET.search(joined.lower()) is None:
        return fields  # the usual line, checked in one go (this runs for every line)
    return {
        name: redact(value) if correlation.readable(value) else INVALID
        for name, value in fields.items()
    }


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
