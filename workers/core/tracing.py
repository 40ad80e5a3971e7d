"""OpenTelemetry traces: one payment is one trace, from the HTTP request to the last webhook.

The W3C ``traceparent`` of the span that creates an event is stored with it in the outbox
(its Kafka headers) and so travels in Kafka headers; each consumer's span is a child of it,
and events a handler emits carry the handler's span on. Off by default (``[tracing] exporter
= "none"``): then no span is ever made and nothing is added to a message, so the hot paths pay
one boolean test. ``file`` writes each process's spans as JSON lines (debugging, tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, use_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from workers.core.config import Settings
from workers.core.events import Headers, header

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

_propagator: Final = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_NO_SPAN: Final[AbstractContextManager[None]] = nullcontext()


def setup_tracing(settings: Settings, role: str) -> TracerProvider | None:
    """Export this process's spans as ``[tracing]`` says; nothing at all when it says none."""
    config = settings.tracing
    if config.exporter == "none":
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"flowpay-{role}"}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings, role)))
    install(provider)
    return provider


def install(provider: TracerProvider | None) -> None:
    """Make spans with ``provider`` (None: stop making spans). Tests install their own."""
    global _tracer
    _tracer = provider.get_tracer("flowpay") if provider is not None else None


def enabled() -> bool:
    return _tracer is not None


def _exporter(settings: Settings, role: str) -> SpanExporter:
    config = settings.tracing
    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=config.otlp_endpoint)
    directory = config.file_dir or settings.dev.home / "traces"
    directory.mkdir(parents=True, exist_ok=True)
    out = Path(directory, f"{role}-{os.getpid()}.jsonl").open("a", encoding="utf-8")  # noqa: SIM115
    return ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")


def parent_of(headers: Headers | None) -> Context:
    """The trace context a message's headers carry (an empty one when they carry none)."""
    carrier = {
        name: value
        for name in (TRACEPARENT, TRACESTATE)
        if (value := header(headers, name)) is not None
    }
    return _propagator.extract(carrier)


def inject(headers: Headers) -> Headers:
    """``headers`` plus the current span's trace context, when there is one."""
    if _tracer is None:
        return headers
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [*headers, *((name, value.encode()) for name, value in carrier.items())]


def http_headers() -> dict[str, str]:
    """The current trace context as HTTP headers, for a call to another service."""
    carrier: dict[str, str] = {}
    if _tracer is not None:
        _propagator.inject(carrier)
    return carrier


def current_traceparent() -> str | None:
    """The current span's ``traceparent``, stored with work done later (the processor's checks)."""
    return http_headers().get(TRACEPARENT)


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, str] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span around the block, current inside it; None, at no cost, when tracing is off."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def child_span(
    name: str, kind: SpanKind, headers: Headers | None, fields: Mapping[str, str | None]
) -> AbstractContextManager[Span | None]:
    """``span`` under the trace context ``headers`` carry, tagged with an event's ids."""
    if _tracer is None:
        return _NO_SPAN  # before any parsing: the consumers' hot path when tracing is off
    return span(name, kind=kind, parent=parent_of(headers), attributes=event_attributes(fields))


def started(
    name: str, kind: SpanKind, headers: Headers | None, fields: Mapping[str, str | None]
) -> Span | None:
    """``child_span``'s span, started but neither current nor ended: for work on many events at
    once, where each event's span is made current around its own part (``within``) and ended
    when its work is (``end``). None when tracing is off."""
    if _tracer is None:
        return None
    return _tracer.start_span(
        name, context=parent_of(headers), kind=kind, attributes=event_attributes(fields)
    )


def within(span: Span | None) -> AbstractContextManager[object]:
    """``span`` current inside the block, left running at its end."""
    return _NO_SPAN if span is None else use_span(span, end_on_exit=False)


def end(span: Span | None, error: BaseException | None = None) -> None:
    if span is None:
        return
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def record(
    name: str,
    *,
    parent: Context,
    start_ns: int,
    end_ns: int,
    kind: SpanKind,
    attributes: Mapping[str, str],
) -> None:
    """A span for work already done (one of a batch): relay publishes, ledger postings."""
    if _tracer is None:
        return
    done = _tracer.start_span(
        name, context=parent, kind=kind, start_time=start_ns, attributes=attributes
    )
    done.end(end_time=end_ns)


def event_attributes(fields: Mapping[str, str | None]) -> dict[str, str]:
    return {f"flowpay.{k}": v for k, v in fields.items() if v is not None}
