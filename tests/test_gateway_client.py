"""The gateway client on its own, over httpx's mock transport (the one place a mock is right)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.conftest import override
from workers.core.config import Settings
from workers.processor.gateway import (
    Charged,
    ChargeRequest,
    Declined,
    GatewayUnreachable,
    HttpGateway,
    RefundDone,
    Rejected,
    Unknown,
    charge_key,
)

REQUEST = ChargeRequest("pay_1", 1999, "USD", "pm_card_visa")
Reply = Callable[[httpx.Request], httpx.Response]


def gateway(reply: Reply, calls: list[httpx.Request], retries: int = 2) -> HttpGateway:
    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return reply(request)

    settings = override(
        Settings(), "gateway", url="http://gw.test", max_retries=retries, backoff_base_s=0.001
    )
    return HttpGateway(settings, transport=httpx.MockTransport(record))


def charge(gw: HttpGateway) -> object:
    async def go() -> object:
        try:
            return await gw.charge(REQUEST)
        finally:
            await gw.close()

    return asyncio.run(go())


def test_success_sends_the_payment_derived_key_and_reference() -> None:
    calls: list[httpx.Request] = []
    outcome = charge(
        gateway(lambda r: httpx.Response(200, json={"id": "ch_1", "status": "succeeded"}), calls)
    )
    assert outcome == Charged("ch_1")
    [request] = calls
    assert request.headers["Idempotency-Key"] == charge_key("pay_1")
    assert json.loads(request.content) == {
        "amount": 1999, "currency": "USD", "payment_method": "pm_card_visa", "reference": "pay_1",
    }  # fmt: skip


def test_decline_is_final_and_not_retried() -> None:
    calls: list[httpx.Request] = []
    reply = httpx.Response(
        200, json={"id": "ch_2", "status": "declined", "decline_code": "insufficient_funds"}
    )
    assert charge(gateway(lambda r: reply, calls)) == Declined("insufficient_funds")
    assert len(calls) == 1


def test_5xx_is_retried_with_the_same_key_then_succeeds() -> None:
    calls: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        if len(calls) < 3:
            return httpx.Response(503)
        return httpx.Response(200, json={"id": "ch_3", "status": "succeeded"})

    assert charge(gateway(flaky, calls, retries=3)) == Charged("ch_3")
    assert len({r.headers["Idempotency-Key"] for r in calls}) == 1
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("error", "reason"),
    [(httpx.ReadTimeout("slow"), "timeout"), (httpx.RemoteProtocolError("dropped"), "connection")],
)
def test_exhausted_retries_leave_the_outcome_unknown(error: Exception, reason: str) -> None:
    calls: list[httpx.Request] = []

    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    assert charge(gateway(fail, calls, retries=2)) == Unknown(reason)
    assert len(calls) == 3


def test_a_409_is_an_unknown_outcome_retried_with_the_same_key() -> None:
    # Stripe's 409: a request with this key is still in progress. Not a decline, not a
    # rejection: the first request may yet charge.
    calls: list[httpx.Request] = []
    in_use = {"error": {"type": "idempotency_error", "code": "idempotency_key_in_use"}}
    assert charge(gateway(lambda r: httpx.Response(409, json=in_use), calls)) == Unknown("http_409")
    assert len(calls) == 3
    assert len({r.headers["Idempotency-Key"] for r in calls}) == 1

    def settles(request: httpx.Request) -> httpx.Response:
        if len(calls) < 2:
            return httpx.Response(409, json=in_use)
        return httpx.Response(200, json={"id": "ch_4", "status": "succeeded"})

    calls.clear()
    assert charge(gateway(settles, calls)) == Charged("ch_4")


def test_a_409_to_a_refund_is_an_unknown_outcome_too() -> None:
    calls: list[httpx.Request] = []
    gw = gateway(lambda r: httpx.Response(409, json={"error": {}}), calls)

    async def go() -> object:
        try:
            return await gw.refund("ch_1", 500, "refund-key")
        finally:
            await gw.close()

    assert asyncio.run(go()) == Unknown("http_409")
    assert {r.headers["Idempotency-Key"] for r in calls} == {"refund-key"}


def test_a_4xx_is_a_rejection_not_retried() -> None:
    calls: list[httpx.Request] = []
    outcome = charge(gateway(lambda r: httpx.Response(422, json={"error": {}}), calls))
    assert isinstance(outcome, Rejected)
    assert len(calls) == 1


def test_refund_and_lookup() -> None:
    calls: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/refunds":
            return httpx.Response(200, json={"id": "re_9"})
        assert request.url.params["reference"] == "pay_1"
        data = [{"id": "ch_1", "status": "succeeded", "amount": 1999, "decline_code": None}]
        return httpx.Response(200, json={"data": data})

    gw = gateway(reply, calls)

    async def go() -> tuple[object, object]:
        try:
            return await gw.refund("ch_1", 500, "k"), await gw.find_charges("pay_1")
        finally:
            await gw.close()

    refunded, found = asyncio.run(go())
    assert refunded == RefundDone("re_9")
    assert [c.id for c in found] == ["ch_1"]  # type: ignore[attr-defined]


def test_lookup_without_an_answer_raises() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gw = gateway(down, [])

    async def go() -> None:
        try:
            await gw.find_charges("pay_1")
        finally:
            await gw.close()

    with pytest.raises(GatewayUnreachable):
        asyncio.run(go())


class _Endless(httpx.AsyncByteStream):
    """A body without end as far as a client can tell (64 MiB, so that a client without a bound
    fails rather than fills the machine); counts what was read of it."""

    def __init__(self) -> None:
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.read < 64 * 1024 * 1024:
            self.read += 65536
            yield b"x" * 65536


def test_an_answer_without_end_is_cut_off_and_the_outcome_unknown() -> None:
    calls: list[httpx.Request] = []
    bodies: list[_Endless] = []

    def endless(request: httpx.Request) -> httpx.Response:
        bodies.append(_Endless())
        return httpx.Response(200, stream=bodies[-1])

    assert charge(gateway(endless, calls, retries=1)) == Unknown("answer_refused")
    assert {c.headers["Idempotency-Key"] for c in calls} == {charge_key("pay_1")}
    assert len(calls) == 2
    # Read up to the bound (1 MiB) and a chunk past it, never further.
    assert all(body.read <= 1024 * 1024 + 65536 for body in bodies)


def test_a_compressed_answer_not_asked_for_is_refused() -> None:
    calls: list[httpx.Request] = []
    gzipped = gzip.compress(json.dumps({"id": "ch_1", "status": "succeeded"}).encode())

    def compressed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=gzipped)

    assert charge(gateway(compressed, calls, retries=0)) == Unknown("answer_refused")
    [request] = calls
    assert request.headers["Accept-Encoding"] == "identity"
