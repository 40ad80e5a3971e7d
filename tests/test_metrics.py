"""Every role's Prometheus metrics, read from real roles while real payments go through them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.conftest import env_for
from tests.helpers.flow import flow
from tests.helpers.kafka import produce_raw
from tests.helpers.metrics import (
    PATIENCE_S,
    MetricPorts,
    Samples,
    Stack,
    label_values,
    observed_stack,
    value,
)
from tests.helpers.servers import free_port, running
from tests.helpers.waiting import wait_for
from tests.test_ledger_support import mixed, publish, quick
from workers.core import local_http
from workers.core.config import Settings
from workers.core.topics import ALL_GROUPS, GROUP_NOTIFIER_ENDPOINTS, topics
from workers.ledger.replay import Replay

# The groups reading the payments topic, each in the role of its name (the notifier's endpoint
# changes come on a topic of their own).
PAYMENT_GROUPS = tuple(g for g in ALL_GROUPS if g != GROUP_NOTIFIER_ENDPOINTS)


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with observed_stack(settings, tmp_path) as running_stack:
        yield running_stack


def _moved(stack: Stack, role: str, name: str, at_least: float, **labels: str) -> Samples:
    found: Samples = {}

    def enough() -> bool:
        found.update(stack.metrics.scrape(role))
        return value(found, name, **labels) >= at_least

    wait_for(enough, PATIENCE_S, f"{role}: {name}{labels} >= {at_least}")
    return found


def test_api_counts_and_times_requests_by_route_and_status(stack: Stack) -> None:
    payment = stack.flow.pay()
    stack.flow.payment(str(payment["id"]))
    stack.flow.payment("pay_missing")
    api = _moved(stack, "api", "flowpay_api_requests_total", 1, status="404")
    created = {"method": "POST", "route": "/v1/payments", "status": "202"}
    assert value(api, "flowpay_api_requests_total", **created) == 1
    assert value(api, "flowpay_api_request_duration_seconds_count", **created) == 1
    assert value(api, "flowpay_api_request_duration_seconds_sum", **created) > 0
    # Ids never become label values: one series for every payment's GET.
    routes = label_values(api, "flowpay_api_requests_total", "route", method="GET")
    assert {r for r in routes if r.startswith("/v1/payments/")} == {"/v1/payments/{payment_id}"}


def test_every_stage_moves_its_metrics(stack: Stack) -> None:
    count = 4
    stack.settle(count)

    outbox = _moved(stack, "outbox", "flowpay_outbox_published_total", count, outbox="api")
    # initiated per payment from the API; processing + a verdict per payment from the processor
    assert value(outbox, "flowpay_outbox_published_total", outbox="processor") >= 2 * count
    outboxes = {"api", "processor", "orchestrator"}
    assert label_values(outbox, "flowpay_outbox_backlog", "outbox") == outboxes
    assert label_values(outbox, "flowpay_outbox_oldest_unpublished_age_seconds", "outbox") == (
        outboxes
    )

    processor = _moved(stack, "processor", "flowpay_gateway_calls_total", count, operation="charge")
    assert (
        value(processor, "flowpay_gateway_calls_total", operation="charge", outcome="success")
        == count - 1
    )
    assert (
        value(processor, "flowpay_gateway_calls_total", operation="charge", outcome="decline") == 1
    )
    assert (
        value(processor, "flowpay_gateway_call_duration_seconds_count", operation="charge") == count
    )
    assert value(processor, "flowpay_gateway_attempts_total", outcome="answered") >= count
    assert value(processor, "flowpay_gateway_in_flight", operation="charge") == 0
    assert label_values(processor, "flowpay_reconciler_backlog", "state") == {
        "processing",
        "requires_action",
        "failed",
    }
    # The processor passes over the events it emitted itself: it handles the initiated ones.
    assert (
        value(processor, "flowpay_handler_outcomes_total", group="processor", outcome="ok") >= count
    )

    ledger = _moved(stack, "ledger", "flowpay_ledger_events_applied_total", 3 * count)
    assert value(ledger, "flowpay_ledger_postings_total", kind="authorize") == count
    assert value(ledger, "flowpay_ledger_postings_total", kind="post") == count - 1
    assert value(ledger, "flowpay_ledger_postings_total", kind="void") == 1
    assert (
        value(ledger, "flowpay_handler_duration_seconds_count", group="ledger", outcome="ok") >= 1
    )

    notifier = _moved(
        stack, "notifier", "flowpay_webhook_deliveries_total", count, outcome="delivered"
    )
    assert (
        value(notifier, "flowpay_webhook_deliveries_total", outcome="delivered", attempt="1")
        == count
    )
    # Sampled from the database once a second: what waits and what failed (the counter above
    # has the delivered ones).
    wait_for(
        lambda: (
            label_values(
                stack.metrics.scrape("notifier"), "flowpay_webhook_deliveries_by_status", "status"
            )
            == {"pending", "failed"}
        ),
        PATIENCE_S,
    )
    assert (
        value(notifier, "flowpay_handler_outcomes_total", group="notifier", outcome="ok")
        >= 3 * count
    )

    api = stack.metrics.scrape("api")
    assert value(api, "flowpay_handler_outcomes_total", group="api", outcome="ok") >= 3 * count


def test_consumer_lag_per_group_and_partition_drains_to_zero(
    stack: Stack, settings: Settings
) -> None:
    stack.settle(2)
    partitions = {str(p) for p in range(settings.kafka.partitions)}
    for group in PAYMENT_GROUPS:  # each group runs in the role of the same name
        wait_for(
            condition=lambda group=group: _drained(stack.metrics.scrape(group), group, partitions),  # type: ignore[misc]
            timeout_s=PATIENCE_S,
            what=f"{group}: a lag of 0 on each of {sorted(partitions)}",
        )


def _drained(samples: Samples, group: str, partitions: set[str]) -> bool:
    shown = label_values(samples, "flowpay_consumer_lag", "partition", group=group)
    return shown == partitions and value(samples, "flowpay_consumer_lag", group=group) == 0


def test_a_poison_message_is_a_dead_letter_of_every_group(stack: Stack, settings: Settings) -> None:
    produce_raw(settings, topics(settings).payments, [b"\x00\xffnot an event"], key=b"pay_poison")
    for role in PAYMENT_GROUPS:
        samples = _moved(stack, role, "flowpay_dead_letters_total", 1, group=role)
        assert value(samples, "flowpay_dead_letters_total", group=role) == 1
    for role in ("api", "processor", "notifier"):  # the runners: one decision per message
        samples = stack.metrics.scrape(role)
        assert (
            value(samples, "flowpay_handler_outcomes_total", group=role, outcome="dead_letter") == 1
        )


def test_gateway_faults_are_counted_by_outcome(settings: Settings, tmp_path: Path) -> None:
    metrics = MetricPorts()
    with flow(
        settings, tmp_path, extra_env=metrics.env(), sim_flags=("--lost-ack-rate", "1.0")
    ) as f:
        lost = f.pay()
        f.wait_for(str(lost["id"]), lambda p: p["status"] == "succeeded", PATIENCE_S)
        samples = metrics.scrape("processor")
        # Every answer lost: the charge's outcome is unknown until the lookup finds it.
        calls = "flowpay_gateway_calls_total"
        assert value(samples, "flowpay_gateway_attempts_total", outcome="lost_ack") >= 2
        assert value(samples, calls, operation="charge", outcome="unknown") == 1
        assert value(samples, calls, operation="lookup", outcome="success") >= 1

        f.faults(lost_ack_rate=0.0, timeout_rate=1.0)
        unknown = f.pay()

        def watched() -> bool:
            found = metrics.scrape("processor")
            samples.update(found)
            return value(found, "flowpay_reconciler_backlog", state="processing") == 1

        wait_for(
            condition=watched,
            timeout_s=PATIENCE_S,
            what="the unknown outcome is in the reconciler's backlog",
        )
        # The first request is held past the client's timeout; the retry finds its key still
        # in use (409: a conflict), and the outcome is unknown.
        assert value(samples, "flowpay_gateway_attempts_total", outcome="timeout") >= 1
        assert value(samples, "flowpay_gateway_attempts_total", outcome="conflict") >= 1
        assert (
            value(samples, "flowpay_gateway_calls_total", operation="charge", outcome="unknown")
            >= 1
        )

        f.faults(timeout_rate=0.0)
        f.wait_for(str(unknown["id"]), lambda p: p["status"] == "succeeded", PATIENCE_S)
        backlog = "flowpay_reconciler_backlog"
        wait_for(
            condition=lambda: value(metrics.scrape("processor"), backlog, state="processing") == 0,
            timeout_s=PATIENCE_S,
            what="the reconciler's backlog empties",
        )


def test_several_api_server_processes_are_added_up(settings: Settings) -> None:
    metrics = MetricPorts()
    url = f"http://127.0.0.1:{free_port()}"
    args = ["serve-api", "--port", url.rsplit(":", 1)[1], "--workers", "2"]
    env = {**env_for(settings), **metrics.env()}
    healthz = {"route": "/healthz", "status": "200"}
    with running(args, env, health_url=url + "/healthz"):
        # The requests are answered by the server processes, the port served by their parent:
        # only adding up the processes' files shows them.
        before = value(metrics.scrape("api"), "flowpay_api_requests_total", **healthz)
        for _ in range(20):  # a connection each: the kernel spreads them over the processes
            local_http.client().get(url + "/healthz", headers={"Connection": "close"})
        after = value(metrics.scrape("api"), "flowpay_api_requests_total", **healthz)
        assert after - before == 20


def test_replay_reports_its_progress(settings: Settings) -> None:
    sent = publish(settings, mixed(4).events)
    with Replay(quick(settings), from_offset=0) as job:
        job.prepare()
        # Another replay may have run in this test process before: prepare starts the count anew.
        assert REGISTRY.get_sample_value("flowpay_ledger_replay_read_messages") == 0
        assert REGISTRY.get_sample_value("flowpay_ledger_replay_messages") == sent
        job.rebuild()
    assert REGISTRY.get_sample_value("flowpay_ledger_replay_messages") == job.total == sent
    assert REGISTRY.get_sample_value("flowpay_ledger_replay_read_messages") == sent
