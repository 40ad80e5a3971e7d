"""The hooks the consumers and the relay call for their work: log lines and spans.

The consumer engine reports each handler call (a batch), and the relay each batch it published:
one line for the batch at INFO (or a WARNING when it failed), one line per event at DEBUG
carrying the event's ids (``workers.core.correlation``), and a span per event that is a child
of the span that created the event (``workers.core.tracing``). Only CloudEvents headers are
read, so a message that will not decode still gets its ids on the lines about it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
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
def handling(role: str, headers: Headers | None) -> Iterator[None]:
    """Around a handler's own work on one event of a batch (a subscriber that makes its events'
    spans itself): the event's ids on every line written meanwhile, and its span, current."""
    fields = correlation.of_headers(headers)
    name = f"{role} {fields['event_type']}"
    with correlation.bound(**fields), tracing.child_span(name, SpanKind.CONSUMER, headers, fields):
        yield


@contextmanager
def following_up(
    name: str,
    traceparent: str | None,
    kind: SpanKind = SpanKind.INTERNAL,
    *,
    level: int = logging.INFO,
    **fields: str | None,
) -> Iterator[None]:
    """Work done later for a payment (a webhook attempt, a re-check): its ids, a child span,
    and a line at ``level`` once it is done."""
    headers: Headers = [(tracing.TRACEPARENT, traceparent)]
    with correlation.bound(**fields), tracing.child_span(name, kind, headers, fields):
        started = time.perf_counter()
        yield
        log.log(level, "%s done in %.1f ms", name, (time.perf_counter() - started) * 1000)


def handled_batch(
    role: str,
    outcome: str,
    messages: Sequence[Message],
    started_ns: int,
    error: BaseException | None = None,
    *,
    spans: bool = True,
) -> None:
    """After a handler call of ``messages``: its batch line, its events' lines and (unless the
    handler made them) spans."""
    ended_ns = time.time_ns()
    level = logging.INFO if error is None else logging.WARNING
    if log.isEnabledFor(level):
        # A batch of one is about one payment: the line carries its ids.
        fields = correlation.of_headers(headers_of(messages[0])) if len(messages) == 1 else {}
        log.log(
            level,
            "%s %s: %d event%s, %s, %.1f ms%s",
            role, outcome, len(messages), "" if len(messages) == 1 else "s",
            spans_of(messages), (ended_ns - started_ns) / 1e6, f" ({error!r})" if error else "",
            extra=fields,
        )  # fmt: skip
    _event_lines(role, outcome, map(headers_of, messages))
    if spans and error is None and tracing.enabled():
        _spans(role, [headers_of(m) for m in messages], started_ns, ended_ns, SpanKind.CONSUMER)


def spans_of(messages: Sequence[Message]) -> str:
    """Where the messages are: ``topic[partition]@first-last`` per partition."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for message in messages:
        where = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        low, high = ranges.get(where, (offset, offset))
        ranges[where] = (min(low, offset), max(high, offset))
    return " ".join(
        f"{t}[{p}]@{low}" + (f"-{high}" if high != low else "")
        for (t, p), (low, high) in sorted(ranges.items())
    )


def published(role: str, outbox: str, batch: Sequence[Headers | None], started_ns: int) -> None:
    """After the relay published a batch of ``outbox``: its line, its events' lines and a
    producer span per event."""
    ended_ns = time.time_ns()
    if log.isEnabledFor(logging.INFO):
        # A batch of one is about one payment: the line carries its ids.
        fields = correlation.of_headers(batch[0]) if len(batch) == 1 else {}
        log.info(
            "%s published %d event%s from %s, %.1f ms",
            role, len(batch), "" if len(batch) == 1 else "s", outbox,
            (ended_ns - started_ns) / 1e6,
            extra=fields,
        )  # fmt: skip
    _event_lines(role, "published", batch)
    if tracing.enabled():
        _spans(role, batch, started_ns, ended_ns, SpanKind.PRODUCER)


def _event_lines(role: str, verb: str, batch: Iterable[Headers | None]) -> None:
    """A line per event at DEBUG, with its ids: with them, one payment's path can be grepped."""
    if log.isEnabledFor(logging.DEBUG):
        for headers in batch:
            fields = correlation.of_headers(headers)
            log.debug("%s %s %s", role, verb, fields["event_type"], extra=fields)


def _spans(
    role: str, batch: Iterable[Headers | None], started_ns: int, ended_ns: int, kind: SpanKind
) -> None:
    """A span per event, a child of the span that created it, from ``started_ns`` to
    ``ended_ns``."""
    for headers in batch:
        fields = correlation.of_headers(headers)
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
