"""What a log line is about: the payment, event and correlation ids of the work in hand.

The runners and the API bind them once per message or request (a context variable, so each
asyncio task and thread has its own); every log line written meanwhile carries them, and
handlers stay free of logging plumbing. ``workers.core.logs`` writes them out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Final

from workers.core.events import Event, Headers, header

FIELDS: Final = ("payment_id", "event_id", "event_type", "correlation_id")
REQUEST_ID_MAX: Final = 200

_bound: ContextVar[dict[str, str] | None] = ContextVar("flowpay_log_context", default=None)
_NOTHING: Final[Mapping[str, str]] = MappingProxyType({})


def current() -> Mapping[str, str]:
    return _bound.get() or _NOTHING


class bound:  # lower case: it reads as a function, ``with bound(...)``
    """Add ``fields`` (those not None) to every log line written inside the block."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: str | None) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        outer = _bound.get()
        inner = {k: v for k, v in self._fields.items() if v is not None}
        self._token = _bound.set({**outer, **inner} if outer else inner)

    def __exit__(self, *_exc: object) -> None:
        _bound.reset(self._token)


def of_event(event: Event) -> dict[str, str]:
    return {
        "payment_id": event.payment_id,
        "event_id": str(event.event_id),
        "event_type": event.type.value,
        "correlation_id": event.correlation_id,
    }


def of_headers(headers: Headers | None) -> dict[str, str | None]:
    """The same fields from an encoded event's CloudEvents headers, without parsing its body."""
    return {
        "payment_id": header(headers, "ce_subject"),
        "event_id": header(headers, "ce_id"),
        "event_type": header(headers, "ce_type"),
        "correlation_id": header(headers, "ce_correlationid"),
    }


def readable(value: str) -> bool:
    """An id a person can read on a log line: at most 200 printable characters."""
    return len(value) <= REQUEST_ID_MAX and value.isprintable()


def request_id(given: str | None) -> str:
    """The caller's X-Request-Id when it is usable as a correlation id, else a new one."""
    if given and readable(given):
        return given
    return str(uuid.uuid4())
