"""The gateway simulator as a real `flowpay serve-gateway-sim` process, over HTTP with httpx.

No PostgreSQL or Kafka here: the simulator keeps its own SQLite file, one per server started.
Most tests share one server and isolate themselves with fresh idempotency keys and references;
the ones about faults, counters, restarts and seeds start servers of their own.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.servers import free_port, running
from tests.helpers.waiting import wait_for
from workers.core import local_http

# How long a "timeout" fault holds a request before the late charge: well past the client
# timeouts below, short enough to keep the file fast.
HOLD_S = 4.0  # a wide margin over the 0.2 s client timeout, even on a loaded CI machine
TRANSPORT_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPAY_")}
    env["FLOWPAY_GATEWAY_SIM__TIMEOUT_HOLD_S"] = str(HOLD_S)
    return env


def card(reference: str | None = None, **changes: Any) -> dict[str, Any]:
    body = {
        "amount": 1999,
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "reference": reference or f"pay_{uuid.uuid4().hex}",
    }
    return body | changes


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


@dataclass
class Sim:
    url: str
    process: subprocess.Popen[bytes]

    def post(
        self, path: str, body: Any, key: str | None = None, timeout: float = 10
    ) -> httpx.Response:
        headers = {} if key is None else {"Idempotency-Key": key}
        return local_http.client().post(
            self.url + path, json=body, headers=headers, timeout=timeout
        )

    def charge(self, body: Any, key: str | None = None, timeout: float = 10) -> httpx.Response:
        return self.post("/v1/charges", body, key or new_key(), timeout)

    def refund(
        self, charge: str, amount: int, key: str | None = None, timeout: float = 10
    ) -> httpx.Response:
        return self.post(
            "/v1/refunds", {"charge": charge, "amount": amount}, key or new_key(), timeout
        )

    def get(self, path: str, **params: str) -> httpx.Response:
        return local_http.client().get(self.url + path, params=params, timeout=10)

    def by_reference(self, reference: str) -> list[dict[str, Any]]:
        response = self.get("/v1/charges", reference=reference)
        assert response.status_code == 200, response.text
        assert response.json()["object"] == "list"
        return list(response.json()["data"])

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """Every charge the simulator ever made (from /_sim/charges) with these field values."""
        data = self.get("/_sim/charges").json()["data"]
        return [c for c in data if all(c[k] == v for k, v in match.items())]

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/_sim/stats").json())

    def set_faults(self, **changes: Any) -> httpx.Response:
        return local_http.client().post(self.url + "/_sim/faults", json=changes, timeout=10)


Start = Callable[..., AbstractContextManager[Sim]]


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Start:
    """Start a simulator: ``with start(db=None, **flags) as sim`` (a fresh db file by default)."""

    @contextmanager
    def go(db: Path | None = None, **flags: Any) -> Iterator[Sim]:
        path = db or tmp_path_factory.mktemp("gateway-sim") / "sim.sqlite3"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["serve-gateway-sim", "--port", str(port), "--db", str(path)]
        for name, value in flags.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        with running(args, _env(), health_url=url + "/healthz") as process:
            yield Sim(url, process)

    return go


@pytest.fixture(scope="module")
def sim(start: Start) -> Iterator[Sim]:
    """The shared server; a little latency keeps concurrent requests overlapping."""
    with start(latency_ms=5, latency_jitter_ms=5) as server:
        yield server


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"type", "code", "message"} <= set(body["error"])
    return dict(body["error"])


# --- charges -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payment_method", "status", "decline_code"),
    [
        ("pm_card_visa", "succeeded", None),
        ("pm_card_mastercard", "succeeded", None),  # any method it does not know works
        ("pm_card_chargeDeclined", "declined", "card_declined"),
        ("pm_card_chargeDeclinedInsufficientFunds", "declined", "insufficient_funds"),
    ],
)
def test_charge_outcome_follows_the_test_payment_method(
    sim: Sim, payment_method: str, status: str, decline_code: str | None
) -> None:
    body = card(payment_method=payment_method)
    key = new_key()
    response = sim.charge(body, key)
    assert response.status_code == 200, response.text
    charge = response.json()
    assert charge["id"].startswith("ch_")
    assert charge == {
        "id": charge["id"], "object": "charge", "status": status, "decline_code": decline_code,
        "amount": 1999, "currency": "USD", "payment_method": payment_method,
        "reference": body["reference"], "amount_refunded": 0, "created_at": charge["created_at"],
    }  # fmt: skip
    # Declines are recorded too.
    [record] = sim.records(idempotency_key=key)
    assert (record["id"], record["status"], record["reference"]) == (
        charge["id"],
        status,
        body["reference"],
    )


def test_same_key_returns_the_same_charge_and_makes_one(sim: Sim) -> None:
    body, key = card(), new_key()
    first = sim.charge(body, key)
    again = sim.charge(body, key)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(sim.records(idempotency_key=key)) == 1


def test_same_key_with_other_parameters_is_refused(sim: Sim) -> None:
    body, key = card(), new_key()
    assert sim.charge(body, key).status_code == 200
    reused = sim.charge(body | {"amount": 2000}, key)
    assert reused.status_code == 422
    assert error_of(reused)["code"] == "idempotency_key_reused"
    assert [c["amount"] for c in sim.records(idempotency_key=key)] == [1999]


def test_concurrent_identical_requests_make_one_charge(sim: Sim) -> None:
    body, key = card(), new_key()

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sim.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/charges", json=body, headers={"Idempotency-Key": key})
                    for _ in range(50)
                )
            )

    responses = asyncio.run(all_at_once())
    # Each one overlapping the first is told the key is in use; the others replay its charge.
    answered = [r for r in responses if r.status_code == 200]
    in_use = [r for r in responses if r.status_code == 409]
    assert len(answered) + len(in_use) == 50
    assert {error_of(r)["code"] for r in in_use} <= {"idempotency_key_in_use"}
    assert len({r.json()["id"] for r in answered}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in answered) == 1
    assert len(sim.records(idempotency_key=key)) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (card(amount=19.99), 422, "parameter_invalid"),
        (card(amount=1999.0), 422, "parameter_invalid"),
        (card(amount=True), 422, "parameter_invalid"),
        (card(amount="1999"), 422, "parameter_invalid"),
        (card(amount=0), 422, "parameter_invalid"),
        (card(amount=-5), 422, "parameter_invalid"),
        (card(currency="usd"), 422, "parameter_invalid"),
        (card(currency="ABC"), 422, "parameter_invalid"),
        (card(payment_method=""), 422, "parameter_invalid"),
        (card() | {"reference": ""}, 422, "parameter_invalid"),
        (
            {"amount": 1999, "currency": "USD", "payment_method": "pm_card_visa"},
            422,
            "parameter_missing",
        ),
        (card(surprise=1), 422, "parameter_unknown"),
        ([1, 2], 422, "body_invalid"),
    ],
)
def test_invalid_charges_are_refused_and_not_made(
    sim: Sim, body: Any, status: int, code: str
) -> None:
    key = new_key()
    response = sim.charge(body, key)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert sim.records(idempotency_key=key) == []


def test_a_charge_needs_an_idempotency_key_and_json(sim: Sim) -> None:
    missing = sim.post("/v1/charges", card())
    assert missing.status_code == 400
    assert error_of(missing)["code"] == "idempotency_key_missing"
    garbled = local_http.client().post(
        sim.url + "/v1/charges", content=b"{not json", headers={"Idempotency-Key": new_key()}
    )
    assert garbled.status_code == 400
    assert error_of(garbled)["code"] == "body_invalid_json"


def test_charges_are_found_by_id_and_by_reference_oldest_first(sim: Sim) -> None:
    reference = f"pay_{uuid.uuid4().hex}"
    first = sim.charge(card(reference, payment_method="pm_card_chargeDeclined")).json()
    second = sim.charge(card(reference)).json()
    sim.charge(card())  # another payment's
    assert sim.by_reference(reference) == [first, second]
    assert sim.by_reference("pay_nobody") == []
    assert sim.get(f"/v1/charges/{second['id']}").json() == second

    unknown = sim.get("/v1/charges/ch_00000000000000000000000000")
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "resource_missing"
    no_reference = sim.get("/v1/charges")
    assert no_reference.status_code == 422
    assert error_of(no_reference)["code"] == "parameter_missing"


def test_health(sim: Sim) -> None:
    assert sim.get("/healthz").json() == {"status": "ok"}


# --- refunds -----------------------------------------------------------------------------


def test_refunds_partial_then_full_never_beyond_the_charge(sim: Sim) -> None:
    charge = sim.charge(card(amount=1000)).json()
    partial = sim.refund(charge["id"], 300)
    assert partial.status_code == 200, partial.text
    refund = partial.json()
    assert refund["id"].startswith("re_")
    assert refund == {
        "id": refund["id"], "object": "refund", "charge": charge["id"], "amount": 300,
        "status": "succeeded", "reference": None, "created_at": refund["created_at"],
    }  # fmt: skip
    too_much = sim.refund(charge["id"], 701)
    assert too_much.status_code == 422
    assert error_of(too_much)["code"] == "amount_too_large"
    assert sim.refund(charge["id"], 700).status_code == 200
    assert sim.get(f"/v1/charges/{charge['id']}").json()["amount_refunded"] == 1000
    assert error_of(sim.refund(charge["id"], 1))["code"] == "amount_too_large"
    [record] = sim.records(id=charge["id"])
    assert record["amount_refunded"] == 1000


def test_refund_is_idempotent(sim: Sim) -> None:
    charge = sim.charge(card(amount=1000)).json()
    key = new_key()
    first = sim.refund(charge["id"], 400, key)
    again = sim.refund(charge["id"], 400, key)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert sim.get(f"/v1/charges/{charge['id']}").json()["amount_refunded"] == 400
    reused = sim.refund(charge["id"], 500, key)
    assert reused.status_code == 422
    assert error_of(reused)["code"] == "idempotency_key_reused"


def test_refunds_are_found_by_reference(sim: Sim) -> None:
    charge = sim.charge(card(amount=1000)).json()
    reference = f"ref_{uuid.uuid4().hex}"
    body = {"charge": charge["id"], "amount": 300, "reference": reference}
    refund = sim.post("/v1/refunds", body, new_key()).json()
    assert refund["reference"] == reference
    sim.refund(charge["id"], 200)  # no reference: found by none
    found = sim.get("/v1/refunds", reference=reference)
    assert found.status_code == 200, found.text
    assert found.json() == {"object": "list", "data": [refund]}
    assert sim.get("/v1/refunds", reference="ref_nobody").json()["data"] == []
    assert error_of(sim.get("/v1/refunds"))["code"] == "parameter_missing"
    # The reference is part of what a key is bound to.
    key = new_key()
    assert sim.post("/v1/refunds", body | {"reference": "a"}, key).status_code == 200
    reused = sim.post("/v1/refunds", body | {"reference": "b"}, key)
    assert error_of(reused)["code"] == "idempotency_key_reused"


def test_refunds_of_declined_or_unknown_charges_are_refused(sim: Sim) -> None:
    declined = sim.charge(card(payment_method="pm_card_chargeDeclined")).json()
    refused = sim.refund(declined["id"], 100)
    assert refused.status_code == 422
    assert error_of(refused)["code"] == "charge_not_refundable"
    unknown = sim.refund("ch_00000000000000000000000000", 100)
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "resource_missing"
    for bad in ({"charge": declined["id"]}, {"charge": declined["id"], "amount": 1.5}):
        assert sim.post("/v1/refunds", bad, new_key()).status_code == 422
    assert (
        error_of(sim.post("/v1/refunds", {"charge": "ch_x", "amount": 1}))["code"]
        == "idempotency_key_missing"
    )


def test_concurrent_refunds_never_exceed_the_charge(sim: Sim) -> None:
    charge = sim.charge(card(amount=1000)).json()

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sim.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/refunds",
                        json={"charge": charge["id"], "amount": 100},
                        headers={"Idempotency-Key": new_key()},
                    )
                    for _ in range(25)
                )
            )

    statuses = sorted(r.status_code for r in asyncio.run(race()))
    assert statuses == [200] * 10 + [422] * 15
    assert sim.get(f"/v1/charges/{charge['id']}").json()["amount_refunded"] == 1000


# --- faults ------------------------------------------------------------------------------


def test_error_fault_answers_503_and_charges_nothing(start: Start) -> None:
    with start(error_rate=1) as sim:
        key = new_key()
        response = sim.charge(card(), key)
        assert response.status_code == 503
        error = error_of(response)
        assert (error["type"], error["code"]) == ("api_error", "gateway_unavailable")
        assert sim.refund("ch_00000000000000000000000000", 1).status_code == 503
        assert sim.records() == []
        # Lookups are never faulted.
        assert sim.by_reference("pay_any") == []
        assert sim.stats()["faults"]["error"] == 2


def test_lost_ack_drops_the_connection_after_charging(start: Start) -> None:
    with start(lost_ack_rate=1) as sim:
        body, key = card(), new_key()
        with pytest.raises(TRANSPORT_ERRORS):
            sim.charge(body, key)
        [record] = sim.records(idempotency_key=key)
        [charge] = sim.by_reference(body["reference"])
        assert charge["id"] == record["id"]
        assert charge["status"] == "succeeded"

        # Refunds lose their acknowledgements too, after refunding.
        with pytest.raises(TRANSPORT_ERRORS):
            sim.refund(charge["id"], 500)
        assert sim.get(f"/v1/charges/{charge['id']}").json()["amount_refunded"] == 500

        # The client's retry with the same key, once acks get through, finds the charge.
        assert sim.set_faults(lost_ack_rate=0).status_code == 200
        retry = sim.charge(body, key)
        assert retry.status_code == 200
        assert retry.json()["id"] == charge["id"]
        assert len(sim.records()) == 1


def test_timeout_fault_holds_the_request_then_charges_late(start: Start) -> None:
    with start(timeout_rate=1) as sim:
        body, key = card(), new_key()
        with pytest.raises(httpx.TimeoutException):
            sim.charge(body, key, timeout=0.2)
        # Given up on by the client, not yet charged: the hold is well past its timeout.
        assert sim.records(idempotency_key=key) == []
        wait_for(lambda: sim.stats()["held"] == 0, timeout_s=HOLD_S + 15, what="the late charge")
        assert len(sim.records(idempotency_key=key)) == 1
        [charge] = sim.by_reference(body["reference"])
        assert charge["status"] == "succeeded"
        assert sim.stats()["faults"]["timeout"] == 1

        # A retry (not faulted now) finds the late charge instead of making another.
        sim.set_faults(timeout_rate=0)
        assert sim.charge(body, key).json()["id"] == charge["id"]
        assert len(sim.records()) == 1


@pytest.mark.parametrize("path", ["/v1/charges", "/v1/refunds"])
def test_a_key_whose_first_request_is_still_processed_gets_409(start: Start, path: str) -> None:
    # Stripe's behaviour: a second request with the key while the first is in progress is
    # refused (safe to retry), neither run in parallel nor answered as a failure.
    with start(latency_ms=0) as sim:
        charge = sim.charge(card(amount=1000)).json()
        body = card() if path == "/v1/charges" else {"charge": charge["id"], "amount": 400}
        key = new_key()
        sim.set_faults(latency_ms=2000)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(sim.post, path, body, key)
            wait_for(lambda: sim.stats()["requests"] == 2, what="the first request to arrive")
            second = sim.post(path, body, key)
            assert second.status_code == 409, second.text
            error = error_of(second)
            assert (error["type"], error["code"]) == ("idempotency_error", "idempotency_key_in_use")
            assert first.result().status_code == 200
        # Once the first has been answered, the key replays its result.
        sim.set_faults(latency_ms=0)
        again = sim.post(path, body, key)
        assert (again.status_code, again.json()) == (200, first.result().json())
        assert sim.stats()["conflicts"] == 1
        assert sim.get(f"/v1/charges/{charge['id']}").json()["amount_refunded"] == (
            400 if path == "/v1/refunds" else 0
        )


def test_a_request_the_client_gave_up_on_during_the_latency_is_still_done(start: Start) -> None:
    # Latency is the gateway's processing time: the request had arrived, so it acts.
    with start(latency_ms=1500) as sim:
        body, key = card(), new_key()
        with pytest.raises(httpx.TimeoutException):
            sim.charge(body, key, timeout=0.2)
        wait_for(lambda: len(sim.records(idempotency_key=key)) == 1, what="the charge")


def test_a_key_held_by_a_timeout_fault_stays_in_use_until_the_late_charge(start: Start) -> None:
    with start(timeout_rate=1) as sim:
        body, key = card(), new_key()
        with pytest.raises(httpx.TimeoutException):
            sim.charge(body, key, timeout=0.2)
        # The client gave up; the gateway has not: a retry now is told to wait, not charged.
        retry = sim.charge(body, key)
        assert error_of(retry)["code"] == "idempotency_key_in_use"
        assert sim.records(idempotency_key=key) == []
        wait_for(lambda: sim.stats()["held"] == 0, timeout_s=HOLD_S + 15, what="the late charge")
        sim.set_faults(timeout_rate=0)
        [record] = sim.records(idempotency_key=key)
        assert sim.charge(body, key).json()["id"] == record["id"]


def test_faults_can_be_limited_to_refunds(start: Start) -> None:
    with start(error_rate=1, faulted="refunds") as sim:
        assert sim.get("/_sim/faults").json()["faulted"] == ["refunds"]
        charge = sim.charge(card())
        assert charge.status_code == 200, charge.text
        assert sim.refund(charge.json()["id"], 100).status_code == 503
        assert sim.set_faults(faulted=["charges"]).status_code == 200
        assert sim.charge(card()).status_code == 503
        assert sim.refund(charge.json()["id"], 100).status_code == 200
        assert sim.stats()["faults"]["error"] == 2


def test_faults_change_at_run_time_and_stats_count_what_happened(start: Start) -> None:
    with start(latency_ms=0) as sim:
        body, key = card(), new_key()
        ok = sim.charge(body, key).json()
        sim.charge(body, key)  # a replay
        sim.charge(card(payment_method="pm_card_chargeDeclinedInsufficientFunds"))
        sim.refund(ok["id"], 100)
        sim.get(f"/v1/charges/{ok['id']}")

        faults = sim.set_faults(error_rate=1, latency_ms=20)
        assert faults.json() == {
            "latency_ms": 20.0, "latency_jitter_ms": 0.0, "timeout_rate": 0.0,
            "lost_ack_rate": 0.0, "error_rate": 1.0,
            "faulted": ["charges", "refunds", "authorizations", "captures", "voids", "payouts"],
        }  # fmt: skip
        assert sim.get("/_sim/faults").json() == faults.json()
        assert sim.charge(card()).status_code == 503

        # Partial updates keep the rest.
        faults = sim.set_faults(error_rate=0, lost_ack_rate=1).json()
        assert (faults["latency_ms"], faults["error_rate"], faults["lost_ack_rate"]) == (
            20.0,
            0.0,
            1.0,
        )
        with pytest.raises(TRANSPORT_ERRORS):
            sim.charge(card())

        assert sim.stats() == {
            "requests": 6, "lookups": 1, "charges": 3, "declines": 1, "refunds": 1, "replays": 1,
            "authorizations": 0, "payouts": 0, "conflicts": 0, "faults": {"error": 1, "timeout": 0, "lost_ack": 1}, "held": 0,
        }  # fmt: skip
        assert len(sim.records()) == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"error_rate": 1.5},
        {"timeout_rate": -0.1},
        {"lost_ack_rate": True},
        {"latency_ms": "5"},
        {"latency_ms": None},
        {"chaos": 1},
        {"faulted": ["transfers"]},
        {"faulted": "refunds"},
    ],
)
def test_invalid_fault_settings_are_refused_and_change_nothing(
    sim: Sim, changes: dict[str, Any]
) -> None:
    before = sim.get("/_sim/faults").json()
    response = sim.set_faults(**changes)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "parameter_invalid"
    assert sim.get("/_sim/faults").json() == before


def test_latency_delays_charges_and_lookups(start: Start) -> None:
    with start(latency_ms=300) as sim:
        # Lower bounds only: a slow machine can make a request slower, never faster.
        began = time.monotonic()
        charge = sim.charge(card()).json()
        assert time.monotonic() - began >= 0.3
        began = time.monotonic()
        sim.get(f"/v1/charges/{charge['id']}")
        assert time.monotonic() - began >= 0.3


# --- durability and reproducibility ------------------------------------------------------


def test_charges_refunds_and_keys_survive_a_restart(start: Start, tmp_path: Path) -> None:
    db = tmp_path / "durable.sqlite3"
    body, key, refund_key = card(amount=1000), new_key(), new_key()
    with start(db=db) as sim:
        charge = sim.charge(body, key).json()
        refund = sim.refund(charge["id"], 250, refund_key).json()
        # Killed, not stopped: what was acknowledged had been committed.
        sim.process.kill()
        sim.process.wait(10)
    with start(db=db) as sim:
        assert sim.get(f"/v1/charges/{charge['id']}").json() == charge | {"amount_refunded": 250}
        assert [c["id"] for c in sim.records(idempotency_key=key)] == [charge["id"]]
        replay = sim.charge(body, key)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == charge["id"]
        assert error_of(sim.charge(body | {"amount": 1}, key))["code"] == "idempotency_key_reused"
        assert sim.refund(charge["id"], 250, refund_key).json() == refund
        assert error_of(sim.refund(charge["id"], 751))["code"] == "amount_too_large"
        assert len(sim.records()) == 1


def test_a_file_from_before_refund_references_is_brought_up_to_date(
    start: Start, tmp_path: Path
) -> None:
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute(
            "INSERT INTO charges VALUES (1, 'ch_old', 'k-old', 'h', 1000, 'USD', 'pm_card_visa',"
            " 'pay_old', 'succeeded', NULL, 100, '2024-01-01T00:00:00Z')"
        )
        conn.execute(
            "INSERT INTO refunds VALUES (1, 're_old', 'rk-old', 'h', 'ch_old', 100, 'succeeded',"
            " '2024-01-01T00:00:00Z')"
        )
    conn.close()
    with start(db=db) as sim:
        body = {"charge": "ch_old", "amount": 200, "reference": "ref_new"}
        refund = sim.post("/v1/refunds", body, new_key())
        assert refund.status_code == 200, refund.text
        assert sim.get("/v1/refunds", reference="ref_new").json()["data"] == [refund.json()]
        assert sim.get("/v1/charges/ch_old").json()["amount_refunded"] == 300


# The simulator's tables as they were before refunds had a reference.
OLD_SCHEMA = """
CREATE TABLE charges (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, idempotency_key TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL, payment_method TEXT NOT NULL, reference TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'declined')), decline_code TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0 CHECK (amount_refunded BETWEEN 0 AND amount),
    created_at TEXT NOT NULL
);
CREATE INDEX charges_by_reference ON charges (reference, seq);
CREATE TABLE refunds (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, idempotency_key TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL, charge_id TEXT NOT NULL REFERENCES charges (id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status = 'succeeded'), created_at TEXT NOT NULL
);
"""


def test_a_seed_makes_the_fault_sequence_reproducible(start: Start) -> None:
    def outcomes(seed: int) -> list[int]:
        with start(error_rate=0.5, seed=seed) as sim:
            return [
                sim.charge(card(reference=f"pay_{n}"), f"key-{n}").status_code for n in range(24)
            ]

    first = outcomes(7)
    assert set(first) == {200, 503}
    assert outcomes(7) == first
    assert outcomes(8) != first


# --- authorizations, captures, voids -------------------------------------------------------


def authorize(sim: Sim, **changes: Any) -> dict[str, Any]:
    response = sim.post("/v1/authorizations", card(**changes), new_key())
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_authorization_holds_then_a_partial_capture_charges_and_releases_the_rest(
    sim: Sim,
) -> None:
    held = authorize(sim, amount=1000)
    assert (held["status"], held["amount_capturable"], held["charge"]) == (
        "requires_capture", 1000, None,
    )  # fmt: skip
    key = new_key()
    path = f"/v1/authorizations/{held['id']}/capture"
    captured = sim.post(path, {"amount_to_capture": 600}, key)
    assert captured.status_code == 200, captured.text
    body = captured.json()
    assert (body["status"], body["amount_captured"], body["amount_capturable"]) == (
        "captured", 600, 0,
    )  # fmt: skip
    # The capture is a charge of what was captured: refunds refund it, lookups find it.
    charge = sim.get(f"/v1/charges/{body['charge']}").json()
    assert (charge["amount"], charge["reference"]) == (600, held["reference"])
    assert sim.refund(charge["id"], 601).status_code == 422
    # The same key replays the capture; a new one finds nothing left to capture.
    again = sim.post(path, {"amount_to_capture": 600}, key)
    assert (again.json(), again.headers.get("Idempotent-Replayed")) == (body, "true")
    assert error_of(sim.post(path, {}, new_key()))["code"] == "authorization_not_holding"
    assert len(sim.by_reference(held["reference"])) == 1


def test_a_capture_above_the_hold_is_refused_and_takes_nothing(sim: Sim) -> None:
    held = authorize(sim, amount=500)
    path = f"/v1/authorizations/{held['id']}/capture"
    assert error_of(sim.post(path, {"amount_to_capture": 501}, new_key()))["code"] == (
        "amount_too_large"
    )
    found = sim.get(f"/v1/authorizations/{held['id']}").json()
    assert (found["status"], found["amount_capturable"]) == ("requires_capture", 500)


def test_a_void_releases_the_hold_once_and_nothing_is_captured_after(sim: Sim) -> None:
    held = authorize(sim)
    key = new_key()
    voided = sim.post(f"/v1/authorizations/{held['id']}/void", {}, key)
    assert (voided.json()["status"], voided.json()["amount_capturable"]) == ("canceled", 0)
    assert sim.post(f"/v1/authorizations/{held['id']}/void", {}, key).json() == voided.json()
    capture = sim.post(f"/v1/authorizations/{held['id']}/capture", {}, new_key())
    assert error_of(capture)["code"] == "authorization_not_holding"
    listed = sim.get("/v1/authorizations", reference=held["reference"]).json()["data"]
    assert [a["status"] for a in listed] == ["canceled"]


def test_declining_test_cards_decline_the_authorization(sim: Sim) -> None:
    held = authorize(sim, payment_method="pm_card_chargeDeclinedInsufficientFunds")
    assert (held["status"], held["decline_code"], held["amount_capturable"]) == (
        "declined", "insufficient_funds", 0,
    )  # fmt: skip
    assert sim.post(f"/v1/authorizations/{held['id']}/void", {}, new_key()).status_code == 422
    assert sim.get("/v1/authorizations/auth_missing").status_code == 404


def test_an_authorization_key_is_bound_to_its_parameters(sim: Sim) -> None:
    key = new_key()
    body = card()
    first = sim.post("/v1/authorizations", body, key)
    assert sim.post("/v1/authorizations", body, key).json() == first.json()
    other = sim.post("/v1/authorizations", {**body, "amount": 1}, key)
    assert error_of(other)["code"] == "idempotency_key_reused"


def test_authorizations_are_faulted_like_charges(start: Start) -> None:
    with start(error_rate=1, faulted="authorizations") as sim:
        assert sim.post("/v1/authorizations", card(), new_key()).status_code == 503
        assert sim.charge(card()).status_code == 200


def payout(reference: str | None = None, **changes: Any) -> dict[str, Any]:
    body = {"amount": 2500, "currency": "EUR", "destination": "ba_merchant",
            "reference": reference or f"po_{uuid.uuid4().hex[:12]}"}  # fmt: skip
    return body | changes


def test_a_payout_is_paid_once_per_key_and_found_by_its_reference(sim: Sim) -> None:
    key, body = new_key(), payout()
    paid = sim.post("/v1/payouts", body, key)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["amount"]) == ("paid", 2500)
    again = sim.post("/v1/payouts", body, key)
    assert (again.json(), again.headers.get("Idempotent-Replayed")) == (paid.json(), "true")
    other = sim.post("/v1/payouts", {**body, "amount": 1}, key)
    assert error_of(other)["code"] == "idempotency_key_reused"
    listed = sim.get("/v1/payouts", reference=body["reference"]).json()["data"]
    assert [p["id"] for p in listed] == [paid.json()["id"]]
    assert sim.get("/_sim/stats").json()["payouts"] == 1


def test_a_payout_to_a_failing_test_account_fails_with_its_code(sim: Sim) -> None:
    failed = sim.post("/v1/payouts", payout(destination="ba_closed"), new_key())
    assert (failed.json()["status"], failed.json()["failure_code"]) == ("failed", "account_closed")
    refused = sim.post("/v1/payouts", payout(amount=0), new_key())
    assert (refused.status_code, error_of(refused)["code"]) == (422, "parameter_invalid")


def test_the_simulators_own_lists_give_every_payout_and_when_each_hold_ended(
    start: Start,
) -> None:
    """``/_sim/payouts`` and ``/_sim/authorizations`` list everything, whatever the reference:
    the chaos checks count paid payouts per FlowPay payout and time each hold."""
    with start() as sim:
        paid, failed = payout(), payout(destination="ba_no_account")
        for body in (paid, failed, paid):
            assert sim.post("/v1/payouts", body, f"key-{body['reference']}").status_code == 200
        listed = sim.get("/_sim/payouts").json()["data"]
        assert [(p["reference"], p["status"]) for p in listed] == [
            (paid["reference"], "paid"), (failed["reference"], "failed"),
        ]  # fmt: skip
        held, voided = authorize(sim), authorize(sim)
        assert sim.post(f"/v1/authorizations/{voided['id']}/void", {}, new_key()).is_success
        ended = {a["id"]: a["ended_at"] for a in sim.get("/_sim/authorizations").json()["data"]}
        assert ended[held["id"]] is None
        assert ended[voided["id"]] >= voided["created_at"]


def test_payouts_are_faulted_like_charges(start: Start) -> None:
    with start(error_rate=1, faulted="payouts") as sim:
        body = payout()
        assert sim.post("/v1/payouts", body, new_key()).status_code == 503
        assert sim.get("/v1/payouts", reference=body["reference"]).json()["data"] == []
        assert sim.charge(card()).status_code == 200
