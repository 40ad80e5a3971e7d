"""The hooks the consumer loops and the relay call for each message: its log lines and its span.

Work on a message runs with the message's ids bound for logging (``workers.core.correlation``)
and inside a span that is a child of the one that created the event (``workers.core.tracing``);
one INFO line says it was done. Only CloudEvents headers are read, so a message that will not
decode still gets its ids on the lines about it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry.trace import SpanKind

from workers.core import correlation, tracing
from workers.core.config import Settings
from workers.core.delivery import headers_of
from workers.core.events import Headers
from workers.core.kafka import Message
from workers.core.logs import setup_logging

log = logging.getLogger("flowpay.events")


@contextmanager
def consuming(role: str, message: Message) -> Iterator[None]:
    """Around everything one consumer does with one message (its retries included)."""
    headers = headers_of(message)
    fields = correlation.of_headers(headers)
    name = f"{role} {fields['event_type']}"
    with correlation.bound(**fields), tracing.child_span(name, SpanKind.CONSUMER, headers, fields):
        started = time.perf_counter()
        yield
        log.info(
            "%s handled %s in %.1f ms",
            role, fields["event_type"], (time.perf_counter() - started) * 1000,
        )  # fmt: skip


@contextmanager
def following_up(
    name: str,
    traceparent: str | None,
    kind: SpanKind = SpanKind.INTERNAL,
    **fields: str | None,
) -> Iterator[None]:
    """Work done later for a payment (a webhook attempt, a re-check): its ids, and a child span."""
    headers: Headers = [(tracing.TRACEPARENT, traceparent)]
    with correlation.bound(**fields), tracing.child_span(name, kind, headers, fields):
        started = time.perf_counter()
        yield
        log.info("%s done in %.1f ms", name, (time.perf_counter() - started) * 1000)


def published(role: str, batch: Iterable[Headers | None], started_ns: int) -> None:
    """After the relay published a batch: a line and a producer span per event."""
    _batch_done(role, "published", batch, started_ns, SpanKind.PRODUCER)


def recorded(role: str, batch: Iterable[Headers | None], started_ns: int) -> None:
    """After a consumer committed a batch in one transaction: a line and a span per event."""
    _batch_done(role, "recorded", batch, started_ns, SpanKind.CONSUMER)


def _batch_done(
    role: str, verb: str, batch: Iterable[Headers | None], started_ns: int, kind: SpanKind
) -> None:
    ended_ns = time.time_ns()
    logging_on, tracing_on = log.isEnabledFor(logging.INFO), tracing.enabled()
    if not (logging_on or tracing_on):
        return
    for headers in batch:
        fields = correlation.of_headers(headers)
        if logging_on:
            log.info("%s %s %s", role, verb, fields["event_type"], extra=fields)
        if tracing_on:
            tracing.record(
                f"{role} {fields['event_type']}",
                parent=tracing.parent_of(headers),
                start_ns=started_ns,
                end_ns=ended_ns,
                kind=kind,
                attributes=tracing.event_attributes(fields),
            )


def start(settings: Settings, role: str) -> None:
    """Logging and tracing for a role's process, as the settings say."""
    setup_logging(settings.log_level, role, settings.log_format)
    tracing.setup_tracing(settings, role)
