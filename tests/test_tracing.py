"""OpenTelemetry: one payment is one trace, from the HTTP request through every role's process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span

from tests.helpers.flow import Flow, flow
from tests.helpers.receiver import Receiver, receiver
from tests.helpers.servers import free_port
from workers.core import observe, tracing
from workers.core.config import Settings, TracingSettings
from workers.core.events import EventType, Initiated, header, new_event
from workers.core.outbox import outbox_row


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This process makes spans into memory for the test, and none after it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)


def _stored_headers() -> list[tuple[str, str | bytes | None]]:
    event = new_event(
        EventType.INITIATED,
        payment_id="pay_1",
        merchant_id="mer_1",
        data=Initiated(amount=1999, currency="USD", payment_method="pm_card_visa"),
        source="test",
        correlation_id="req-1",
    )
    return [(name, value) for name, value in outbox_row(event)[3].obj]


def _staged_in_a_span() -> tuple[Span, list[tuple[str, str | bytes | None]]]:
    with tracing.span("POST /v1/payments") as span:
        assert span is not None
        return span, _stored_headers()


def test_with_tracing_off_nothing_is_added_and_no_span_is_made() -> None:
    tracing.install(None)
    assert header(_stored_headers(), "traceparent") is None
    with tracing.span("anything") as span:
        assert span is None
    assert tracing.http_headers() == {}


def test_an_event_staged_inside_a_span_stores_that_span_s_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    span, stored = _staged_in_a_span()
    made = span.get_span_context()
    traceparent = header(stored, "traceparent")
    assert traceparent is not None
    assert traceparent.startswith(f"00-{made.trace_id:032x}-{made.span_id:016x}-")
    parent = trace.get_current_span(tracing.parent_of(stored)).get_span_context()
    assert (parent.trace_id, parent.span_id) == (made.trace_id, made.span_id)


def test_a_batch_s_spans_are_children_of_each_event_s_creator(
    spans: InMemorySpanExporter,
) -> None:
    _, stored = _staged_in_a_span()
    observe.published("outbox", "api.outbox", [stored], time.time_ns())
    relay, api = spans.get_finished_spans()[::-1]
    assert relay.name == "outbox payment.initiated"
    assert relay.parent is not None
    assert relay.parent.span_id == api.context.span_id
    assert relay.context.trace_id == api.context.trace_id
    assert relay.attributes is not None
    assert relay.attributes["flowpay.correlation_id"] == "req-1"


def test_the_otlp_exporter_sends_spans_to_its_endpoint() -> None:
    got: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    settings = Settings(tracing=TracingSettings(exporter="otlp", otlp_endpoint=endpoint))
    try:
        provider = tracing.setup_tracing(settings, "tester")
        assert provider is not None
        with tracing.span("POST /v1/payments"):
            pass
        assert provider.force_flush()
        provider.shutdown()
    finally:
        tracing.install(None)
        server.shutdown()
    [(path, content_type, body)] = got
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "flowpay-tester"
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["POST /v1/payments"]


@dataclass(frozen=True)
class Recorded:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]


@contextmanager
def traced_flow(
    settings: Settings, tmp_path: Path, sim_flags: tuple[str, ...] = ()
) -> Iterator[tuple[Flow, Receiver, Path]]:
    """Every role, each process writing its spans to a file under the third item."""
    traces = tmp_path / "traces"
    env = {
        "FLOWPAY_TRACING__EXPORTER": "file",
        "FLOWPAY_TRACING__FILE_DIR": str(traces),
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # each process writes its spans every 100 ms
        "FLOWPAY_NOTIFIER__POLL_INTERVAL_S": "0.1",
    }
    with (
        receiver(free_port()) as hook,
        flow(settings, tmp_path, sim_flags=sim_flags, extra_env=env) as f,
    ):
        hook.secret = f.start_downstream(hook.url)
        yield f, hook, traces


def test_one_payment_is_one_trace_across_every_process(settings: Settings, tmp_path: Path) -> None:
    with traced_flow(settings, tmp_path) as (f, hook, traces):
        payment_id = f.pay()["id"]
        f.wait_for(payment_id, lambda p: p["status"] == "succeeded")
        hook.wait_for(1)
        tree = _wait_for_tree(traces, payment_id)

    api = tree.one("POST /v1/payments", "flowpay-api")
    assert api.parent_id is None  # the request is the root: its caller sent no traceparent
    consumed = tree.one("processor payment.charge", "flowpay-processor")
    assert consumed.parent_id == api.span_id
    assert tree.one("outbox payment.initiated", "flowpay-outbox").parent_id == api.span_id
    assert tree.one("ledger payment.initiated", "flowpay-ledger").parent_id == api.span_id
    # What the processor did and emitted while handling the event hangs under its span.
    assert tree.one("gateway charge", "flowpay-processor").parent_id == consumed.span_id
    for stage in ("outbox", "ledger", "notifier"):
        derived = tree.one(f"{stage} payment.succeeded", f"flowpay-{stage}")
        assert derived.parent_id == consumed.span_id, stage
    # An attempt hangs under the span that emitted its event, whether the notifier took that
    # event alone (under a span of its own) or in a batch (spans recorded afterwards).
    assert tree.one("webhook attempt 1", "flowpay-notifier").parent_id == consumed.span_id
    assert {s.trace_id for s in tree.spans} == {api.trace_id}
    known = {s.span_id for s in tree.spans}
    assert all(s.parent_id in known for s in tree.spans if s is not api), "a span's parent is lost"


def test_the_reconciler_s_checks_stay_in_the_payment_s_trace(
    settings: Settings, tmp_path: Path
) -> None:
    with traced_flow(settings, tmp_path, sim_flags=("--error-rate", "1")) as (f, hook, traces):
        payment_id = f.pay()["id"]
        deadline = time.monotonic() + 60
        while (f.processor_state(payment_id) or {}).get("next_check_at") is None:
            assert time.monotonic() < deadline, "the outcome never became unknown"
            time.sleep(0.1)
        f.faults(error_rate=0)  # the reconciler's next check charges it
        f.wait_for(payment_id, lambda p: p["status"] == "succeeded")
        hook.wait_for(1)
        tree = _wait_for_tree(traces, payment_id)

    consumed = tree.one("processor payment.charge", "flowpay-processor")
    checks = {s.span_id: s for s in tree.spans if s.name == "reconciler check"}
    assert checks
    assert all(check.parent_id == consumed.span_id for check in checks.values())
    assert tree.one("outbox payment.succeeded", "flowpay-outbox").parent_id in checks
    charges = [s for s in tree.spans if s.name == "gateway charge"]
    assert any(charge.parent_id in checks for charge in charges)


@dataclass
class Tree:
    spans: list[Recorded]

    def one(self, name: str, service: str) -> Recorded:
        found = [s for s in self.spans if s.name == name and s.service == service]
        assert len(found) == 1, f"{name} in {service}: {found}"
        return found[0]


# The spans the tests look at, by the process that records them (each writes its own file, on
# its own schedule: one process's span may be written after a later one's).
LOOKED_AT: Final = (
    ("POST /v1/payments", "flowpay-api"),
    ("processor payment.charge", "flowpay-processor"),
    ("gateway charge", "flowpay-processor"),
    ("outbox payment.succeeded", "flowpay-outbox"),
    ("ledger payment.succeeded", "flowpay-ledger"),
    ("notifier payment.succeeded", "flowpay-notifier"),
    ("webhook attempt 1", "flowpay-notifier"),
)


def _wait_for_tree(traces: Path, payment_id: str) -> Tree:
    """Every span of the payment's trace, once each of ``LOOKED_AT`` is among them."""
    deadline = time.monotonic() + 30
    while True:
        spans = _read_spans(traces)
        ids = {s.trace_id for s in spans if s.attributes.get("flowpay.payment_id") == payment_id}
        assert len(ids) <= 1, f"the payment's spans are in {len(ids)} traces"
        tree = Tree([s for s in spans if s.trace_id in ids])
        if set(LOOKED_AT) <= {(s.name, s.service) for s in tree.spans}:
            return tree
        assert time.monotonic() < deadline, f"spans so far: {[s.name for s in tree.spans]}"
        time.sleep(0.2)


def _read_spans(traces: Path) -> list[Recorded]:
    spans = []
    for path in traces.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if not line.endswith("}"):
                continue  # being written
            raw = json.loads(line)
            spans.append(
                Recorded(
                    raw["name"],
                    raw["resource"]["attributes"]["service.name"],
                    raw["context"]["trace_id"],
                    raw["context"]["span_id"],
                    raw["parent_id"],
                    raw["attributes"],
                )
            )
    return spans
