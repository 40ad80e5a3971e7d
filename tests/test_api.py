"""The merchant HTTP API against a running `flowpay serve-api`, real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import api as api_fixtures
from tests.helpers.api import CARD, Api, error_of
from tests.helpers.db import Conn
from workers.api.idempotency import lock_id
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.events import (
    EventType,
    Failed,
    Processing,
    Refunded,
    Succeeded,
    encode,
    new_event,
)
from workers.core.kafka import make_producer, produce_sync
from workers.core.topics import topics

# The module's API server, its database and two merchants per test (tests/helpers/api.py).
server, settings, api = api_fixtures.server, api_fixtures.settings, api_fixtures.api


# Counts of what one merchant's requests wrote (the module's tests share a database).
_COUNTS = {
    "api.payments": "SELECT count(*) FROM api.payments WHERE merchant_id = %s",
    "api.outbox": "SELECT count(*) FROM api.outbox"
    " WHERE convert_from(value, 'UTF8')::jsonb ->> 'merchant_id' = %s",
    "api.idempotency_keys": "SELECT count(*) FROM api.idempotency_keys WHERE merchant_id = %s",
    "api.refunds": "SELECT count(*) FROM api.refunds r JOIN api.payments p ON p.id = r.payment_id"
    " WHERE p.merchant_id = %s",
}


def count(db: Conn, table: str, api: Api) -> int:
    return int(db.execute(_COUNTS[table], (api.merchant_id,)).fetchone()[0])  # type: ignore[index]


# --- creating payments -------------------------------------------------------------------


def test_accepted_payment_is_stored_with_its_event_and_located(api: Api, db: Conn) -> None:
    response = api.pay({**CARD, "description": "order 7", "metadata": {"order": "7"}})
    assert response.status_code == 202
    payment = response.json()
    assert payment["id"].startswith("pay_")
    assert response.headers["location"] == f"/v1/payments/{payment['id']}"
    assert {k: payment[k] for k in ("object", "status", "amount", "currency", "refunded_amount")} == {
        "object": "payment", "status": "initiated", "amount": 1999, "currency": "USD", "refunded_amount": 0,
    }  # fmt: skip
    assert payment["metadata"] == {"order": "7"}
    assert payment["failure_reason"] is None
    key, value = db.execute(
        "SELECT message_key, value FROM api.outbox WHERE message_key = %s",
        (payment["id"].encode(),),
    ).fetchone()  # type: ignore[misc]
    assert bytes(key) == payment["id"].encode()
    event = json.loads(bytes(value))
    assert event["type"] == "payment.initiated"
    assert event["merchant_id"] == api.merchant_id
    assert event["data"]["amount"] == 1999


def test_same_key_same_request_replays_the_stored_answer_byte_for_byte(api: Api, db: Conn) -> None:
    first = api.pay(idem="order-1")
    again = api.pay(idem="order-1")
    assert again.status_code == 202
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["location"] == first.headers["location"]
    assert count(db, "api.payments", api) == 1
    assert count(db, "api.outbox", api) == 1


def test_same_key_different_request_is_refused(api: Api, db: Conn) -> None:
    api.pay(idem="order-2")
    response = api.pay({**CARD, "amount": 2000}, idem="order-2")
    assert response.status_code == 422
    assert error_of(response)["code"] == "idempotency_key_reused"
    assert count(db, "api.payments", api) == 1


def test_keys_are_scoped_per_merchant(api: Api, db: Conn) -> None:
    assert api.pay(idem="shared").status_code == 202
    other = api.pay(idem="shared", key=api.other_key)
    assert other.status_code == 202
    assert "idempotent-replayed" not in other.headers
    assert count(db, "api.payments", api) == 1
    other_merchant = db.execute(
        "SELECT merchant_id FROM api.payments WHERE id = %s", (other.json()["id"],)
    ).fetchone()
    assert other_merchant != (api.merchant_id,)


def test_key_in_flight_is_409_and_safe_to_retry(api: Api, settings: Settings) -> None:
    with psycopg.connect(admin_url(settings), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_id(api.merchant_id, "busy"),))
        response = api.pay(idem="busy")
        assert response.status_code == 409
        assert error_of(response)["code"] == "idempotency_key_in_use"
        holder.execute("SELECT pg_advisory_unlock_all()")
    assert api.pay(idem="busy").status_code == 202


def test_hundred_concurrent_identical_requests_create_one_payment(api: Api, db: Conn) -> None:
    async def fire() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {api.key}", "Idempotency-Key": "race-1"}
        clients = [
            httpx.AsyncClient(
                base_url=api.url, headers=headers, timeout=30, verify=local_http.tls_context()
            )
            for _ in range(100)
        ]
        try:
            return await asyncio.gather(*(c.post("/v1/payments", json=CARD) for c in clients))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    responses = asyncio.run(fire())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {202, 409}, codes
    assert 202 in codes
    ids = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    assert all(
        error_of(r)["code"] == "idempotency_key_in_use" for r in responses if r.status_code == 409
    )
    assert count(db, "api.payments", api) == 1
    assert count(db, "api.outbox", api) == 1


def test_rejected_request_stores_nothing_so_the_key_can_be_reused(api: Api, db: Conn) -> None:
    bad = api.pay({**CARD, "amount": 0}, idem="fix-me")
    assert bad.status_code == 422
    assert count(db, "api.idempotency_keys", api) == 0
    assert api.pay(idem="fix-me").status_code == 202


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({**CARD, "amount": 19.99}, "amount", "amount_invalid"),
        ({**CARD, "amount": True}, "amount", "amount_invalid"),
        ({**CARD, "amount": "1999"}, "amount", "amount_invalid"),
        ({**CARD, "amount": 0}, "amount", "amount_invalid"),
        ({**CARD, "amount": -5}, "amount", "amount_invalid"),
        ({**CARD, "amount": 10**12 + 1}, "amount", "amount_invalid"),
        ({**CARD, "amount": 10**30}, "amount", "amount_invalid"),
        ({**CARD, "currency": "XYZ"}, "currency", "currency_invalid"),
        ({**CARD, "currency": "usd"}, "currency", "currency_invalid"),
        ({**CARD, "currency": "XXX"}, "currency", "currency_invalid"),
        ({**CARD, "surprise": 1}, "surprise", "parameter_unknown"),
        ({"currency": "USD", "payment_method": "pm_card_visa"}, "amount", "parameter_missing"),
        ({**CARD, "payment_method": ""}, "payment_method", "payment_method_invalid"),
        ({**CARD, "description": "x" * 1001}, "description", "description_invalid"),
        ({**CARD, "metadata": {f"k{i}": "v" for i in range(51)}}, "metadata", "metadata_invalid"),
        ({**CARD, "metadata": {"k" * 41: "v"}}, "metadata", "metadata_invalid"),
        ({**CARD, "metadata": {"k": "v" * 501}}, "metadata", "metadata_invalid"),
        ({**CARD, "metadata": {"k": 5}}, "metadata.k", "metadata_invalid"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(
    api: Api, db: Conn, body: Any, param: str, code: str
) -> None:
    response = api.pay(body)
    assert response.status_code == 422
    error = error_of(response)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert count(db, "api.payments", api) == 0


def test_amount_in_a_zero_decimal_currency_is_accepted(api: Api) -> None:
    response = api.pay({**CARD, "currency": "JPY", "amount": 500})
    assert response.status_code == 202
    assert response.json()["currency"] == "JPY"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "body_invalid_json"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 422, "body_invalid"),
        (json.dumps(CARD).encode(), {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"{" + b'"description": "' + b"x" * 70_000 + b'"}', {"Content-Type": "application/json"}, 413,
         "request_too_large"),
    ],
)  # fmt: skip
def test_malformed_requests_get_their_4xx_in_the_envelope(
    api: Api, db: Conn, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = api.pay(body, **headers)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert count(db, "api.payments", api) == 0


def test_post_without_idempotency_key_is_400(api: Api) -> None:
    response = api.post("/v1/payments", CARD)
    assert response.status_code == 400
    assert error_of(response)["code"] == "idempotency_key_missing"


@pytest.mark.parametrize("key", ["x" * 256, "has space", "tab\tkey"])
def test_malformed_idempotency_key_is_400(api: Api, key: str) -> None:
    response = api.pay(idem=key)
    assert response.status_code == 400
    assert error_of(response)["code"] == "idempotency_key_invalid"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "api_key_missing"),
        ("Basic abc", "api_key_invalid"),
        ("Bearer sk_live_wrong", "api_key_invalid"),
    ],
)
def test_missing_or_unknown_keys_are_401(
    api: Api, db: Conn, authorization: str | None, code: str
) -> None:
    headers = {"Idempotency-Key": "k1", "Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    response = local_http.client().post(
        api.url + "/v1/payments", content=json.dumps(CARD), headers=headers
    )
    assert response.status_code == 401
    error = error_of(response)
    assert (error["type"], error["code"]) == ("authentication_error", code)
    assert count(db, "api.idempotency_keys", api) == 0
    assert (
        local_http.client()
        .get(api.url + "/v1/payments", headers={"Authorization": "Bearer nope"})
        .status_code
        == 401
    )


def test_keys_are_stored_only_as_hashes(api: Api, db: Conn) -> None:
    stored = [bytes(r[0]) for r in db.execute("SELECT key_hash FROM api.api_keys")]
    assert len(stored) >= 2
    assert all(api.key.encode() not in h and len(h) == 32 for h in stored)


# --- reading payments --------------------------------------------------------------------


def test_get_returns_own_payment_and_404_for_others_and_unknown(api: Api) -> None:
    payment = api.pay().json()
    mine = api.get(f"/v1/payments/{payment['id']}")
    assert mine.status_code == 200
    assert mine.json() == payment
    for key, pid in ((api.other_key, payment["id"]), (api.key, "pay_00000000000000000000000000")):
        response = api.get(f"/v1/payments/{pid}", key=key)
        assert response.status_code == 404
        assert error_of(response)["code"] == "resource_missing"


def test_list_is_newest_first_paginated_filtered_and_own_only(api: Api, db: Conn) -> None:
    ids = [api.pay().json()["id"] for _ in range(5)]
    api.pay(key=api.other_key)
    page = api.get("/v1/payments", limit=3).json()
    assert page["object"] == "list"
    assert [p["id"] for p in page["data"]] == ids[::-1][:3]
    assert page["has_more"] is True
    rest = api.get("/v1/payments", limit=3, starting_after=ids[2]).json()
    assert [p["id"] for p in rest["data"]] == ids[1::-1]
    assert rest["has_more"] is False
    db.execute("UPDATE api.payments SET status = 'failed' WHERE id = %s", (ids[0],))
    failed = api.get("/v1/payments", status="failed").json()
    assert [p["id"] for p in failed["data"]] == [ids[0]]
    assert api.get("/v1/payments").json()["data"].__len__() == 5


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"status": "lost"}, "status")],
)
def test_bad_list_parameters_are_422(api: Api, params: dict[str, Any], param: str) -> None:
    response = api.get("/v1/payments", **params)
    assert response.status_code == 422
    assert error_of(response)["param"] == param


def test_cursor_of_another_merchant_is_404(api: Api) -> None:
    theirs = api.pay(key=api.other_key).json()["id"]
    response = api.get("/v1/payments", starting_after=theirs)
    assert response.status_code == 404


def test_unknown_routes_and_methods_use_the_envelope(api: Api) -> None:
    assert error_of(api.get("/v1/nothing-here"))["code"] == "resource_missing"
    response = local_http.client().delete(api.url + "/v1/payments")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_health_and_readiness(api: Api) -> None:
    assert local_http.client().get(api.url + "/healthz").json() == {"status": "ok"}
    assert local_http.client().get(api.url + "/readyz").json() == {"status": "ready"}


# --- refunds -----------------------------------------------------------------------------


def _succeed(db: Conn, payment_id: str) -> None:
    db.execute(
        ("UPDATE api.payments SET status = 'succeeded', amount_received = amount WHERE id = %s"),
        (payment_id,),
    )


def test_refund_of_a_payment_not_succeeded_is_409(api: Api, db: Conn) -> None:
    payment = api.pay().json()
    response = api.post(f"/v1/payments/{payment['id']}/refunds", {}, **{"Idempotency-Key": "r1"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "payment_not_refundable"
    assert count(db, "api.refunds", api) == 0


def test_refunds_record_a_request_event_and_never_exceed_the_charge(api: Api, db: Conn) -> None:
    payment = api.pay().json()
    _succeed(db, payment["id"])
    path = f"/v1/payments/{payment['id']}/refunds"
    partial = api.post(path, {"amount": 500, "reason": "damaged"}, **{"Idempotency-Key": "r1"})
    assert partial.status_code == 202
    refund = partial.json()
    assert {k: refund[k] for k in ("object", "payment_id", "amount", "status")} == {
        "object": "refund", "payment_id": payment["id"], "amount": 500, "status": "requested",
    }  # fmt: skip
    too_much = api.post(path, {"amount": 1500}, **{"Idempotency-Key": "r2"})
    assert too_much.status_code == 422
    assert error_of(too_much)["param"] == "amount"
    rest = api.post(path, {}, **{"Idempotency-Key": "r3"})
    assert rest.status_code == 202
    assert rest.json()["amount"] == 1499
    done = api.post(path, {}, **{"Idempotency-Key": "r4"})
    assert done.status_code == 409
    replay = api.post(path, {"amount": 500, "reason": "damaged"}, **{"Idempotency-Key": "r1"})
    assert replay.content == partial.content
    events = [
        json.loads(bytes(r[0]))
        for r in db.execute(
            "SELECT value FROM api.outbox WHERE message_key = %s ORDER BY id",
            (payment["id"].encode(),),
        )
    ]
    assert [e["type"] for e in events] == [
        "payment.initiated",
        "payment.refund_requested",
        "payment.refund_requested",
    ]
    assert [e["data"]["amount"] for e in events[1:]] == [500, 1499]


def test_refund_of_another_merchants_payment_is_404(api: Api, db: Conn) -> None:
    payment = api.pay(key=api.other_key).json()
    _succeed(db, payment["id"])
    response = api.post(f"/v1/payments/{payment['id']}/refunds", {}, **{"Idempotency-Key": "x"})
    assert response.status_code == 404


# --- the read model ----------------------------------------------------------------------


def _publish(settings: Settings, *events: Any) -> None:
    producer = make_producer(settings, "operator")
    for event in events:
        encoded = encode(event)
        produce_sync(
            producer,
            topics(settings).payments,
            key=encoded.key,
            value=encoded.value,
            headers=encoded.headers,
        )


def _wait_status(api: Api, payment_id: str, predicate: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        payment = api.get(f"/v1/payments/{payment_id}").json()
        if predicate(payment):
            return dict(payment)
        time.sleep(0.1)
    raise AssertionError(f"payment never got there: {payment}")


def test_status_follows_the_event_log_once_per_event(
    api: Api, settings: Settings, db: Conn
) -> None:
    payment = api.pay().json()
    pid, mid = payment["id"], api.merchant_id

    def event(type_: EventType, data: Any) -> Any:
        return new_event(type_, payment_id=pid, merchant_id=mid, data=data, source="test")

    processing = event(EventType.PROCESSING, Processing())
    succeeded = event(EventType.SUCCEEDED, Succeeded(charge_id="ch_1"))
    _publish(settings, processing, succeeded, processing)  # a stale redelivery at the end
    assert _wait_status(api, pid, lambda p: p["status"] == "succeeded")["failure_reason"] is None

    refund = event(EventType.REFUNDED, Refunded(refund_id="re_1", amount=500, refunded_total=500))
    _publish(settings, refund, refund)
    partial = _wait_status(api, pid, lambda p: p["refunded_amount"] == 500)
    assert partial["status"] == "succeeded"
    full = event(EventType.REFUNDED, Refunded(refund_id="re_2", amount=1499, refunded_total=1999))
    _publish(settings, full)
    assert _wait_status(api, pid, lambda p: p["status"] == "refunded")["refunded_amount"] == 1999
    seen = {str(e.event_id) for e in (processing, succeeded, refund, full)}
    stored = {str(r[0]) for r in db.execute("SELECT event_id FROM api.processed_events")}
    assert seen <= stored


def test_failed_payment_carries_its_reason(api: Api, settings: Settings) -> None:
    payment = api.pay().json()
    failed = new_event(
        EventType.FAILED, payment_id=payment["id"], merchant_id=api.merchant_id,
        data=Failed(reason="card_declined"), source="test",
    )  # fmt: skip
    _publish(settings, failed)
    assert (
        _wait_status(api, payment["id"], lambda p: p["status"] == "failed")["failure_reason"]
        == "card_declined"
    )
