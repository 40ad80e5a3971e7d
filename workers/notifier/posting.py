"""One signed POST of a webhook, bounded in time and size; it ends in a ``Result``, never raises.

An endpoint is a stranger's server: it may answer slowly, endlessly or with anything. The whole
attempt (resolving, connecting, sending, reading) has one deadline; the answer is read as a
stream, at most ``MAX_READ`` bytes, then the connection is closed; what is kept of it is
sanitised (``workers.notifier.answers``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import httpx

from workers.core import webhooks
from workers.core.outbound_http import Outbound
from workers.notifier.answers import HEAD_BYTES, describe, retry_after_s, sanitise

USER_AGENT: Final = "FlowPay-Webhooks/1"
MAX_READ: Final = 64 * 1024  # of an answer's body; the rest is never read


@dataclass(frozen=True)
class Due:
    """A claimed delivery: what to send where, and what its attempt is numbered."""

    id: str
    endpoint_id: str
    url: str
    secrets: tuple[
        str, ...
    ]  # those that sign now, newest first (workers.notifier.endpoint_secrets)
    endpoint_status: str
    body: bytes
    attempts: int
    payment_id: str | None = None
    event_id: str | None = None
    correlation_id: str | None = None
    traceparent: str | None = None
    # Why ``secret`` could not be had (its key is not configured): nothing is sent.
    secret_error: str | None = None


@dataclass(frozen=True)
class Result:
    status_code: int | None
    error: str | None
    retry_after_s: float | None
    started_at: datetime
    duration_ms: int
    head: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def summary(self) -> str:
        if self.status_code is None:
            return self.error or "no answer"
        return f"HTTP {self.status_code}" + (f" ({self.error})" if self.error else "")


@dataclass
class _Answer:
    """Filled in as the answer arrives, so that a status survives a body cut short."""

    status_code: int | None = None
    retry_after: str | None = None
    head: bytes = b""


def unsigned(error: str) -> Result:
    """The outcome of an attempt that could not be signed, so was never sent."""
    return Result(None, error, None, datetime.now(UTC), 0, None)


async def post(http: Outbound, delivery: Due, deadline_s: float) -> Result:
    """Send ``delivery`` once; whatever happens, the outcome as a ``Result``.

    Once a status has arrived it is the outcome, even if the body then fails or times out
    (the endpoint has answered); the failure is kept as the attempt's error.
    """
    started_at, clock = datetime.now(UTC), time.perf_counter()
    answer, error = _Answer(), None
    try:
        async with asyncio.timeout(deadline_s):
            await _exchange(http, delivery, answer)
    except (TimeoutError, httpx.TimeoutException):
        error = "timeout"
    except Exception as exc:  # any failure is the attempt's outcome, recorded as such
        error = describe(exc)
    return Result(
        answer.status_code,
        error,
        None if answer.status_code is None else retry_after_s(answer.retry_after),
        started_at,
        int((time.perf_counter() - clock) * 1000),
        None if answer.status_code is None else sanitise(answer.head),
    )


async def _exchange(http: Outbound, delivery: Due, answer: _Answer) -> None:
    headers = webhooks.headers(delivery.secrets, delivery.id, delivery.body)
    headers["Content-Type"] = "application/json"
    request = http.request("POST", delivery.url, headers=headers, content=delivery.body)
    async with http.stream(request) as got:
        answer.status_code, answer.retry_after = got.status_code, got.headers.get("retry-after")
        head, read = bytearray(), 0
        async for chunk in got.aiter_raw():
            if len(head) < HEAD_BYTES:
                head += chunk[: HEAD_BYTES - len(head)]
                answer.head = bytes(head)
            read += len(chunk)
            if read >= MAX_READ:
                break  # leaving the block closes the connection: the rest is never read
