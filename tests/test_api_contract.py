"""What the API does agrees with what /openapi.json says, request by request, on a real
`flowpay serve-api`: the differences merchants' tooling found (issue 20), each pinned down.

schemathesis looks for such differences at large (tests/test_fuzz_api.py); these say exactly
which answer each case gets.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import jsonschema
import pytest

from tests.helpers import api as api_fixtures
from tests.helpers.api import CARD, Api, error_of
from tests.helpers.contract import conforms
from tests.helpers.db import Conn
from workers.api.openapi import documented_codes
from workers.core import local_http

server, settings, api = api_fixtures.server, api_fixtures.settings, api_fixtures.api


def document(api: Api) -> dict[str, Any]:
    return dict(local_http.client().get(api.url + "/openapi.json").json())


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return dict(doc["paths"][path][method.lower()])


def documented(doc: dict[str, Any], method: str, path: str, status: int) -> set[str]:
    """The codes the document says the operation answers with ``status``."""
    return documented_codes(operation(doc, method, path)["responses"].get(str(status), {}))


def stream(api: Api, payment_id: str, *, first_event: bool, **headers: str) -> httpx.Response:
    """The event stream's answer: with its first event when ``first_event`` (then let go)."""
    sent = {b"Authorization": f"Bearer {api.key}".encode()} | {
        k.encode(): v.encode() for k, v in headers.items()
    }
    url = f"{api.url}/v1/payments/{payment_id}/events"
    with local_http.client().stream("GET", url, headers=sent, timeout=30) as response:
        body = b""
        if response.status_code != 200:
            body = response.read()
        elif first_event:
            for chunk in response.iter_bytes():
                body += chunk
                if b"\n\n" in body:
                    break
    return httpx.Response(response.status_code, content=body.split(b"\n\n")[0])


# --- 405: Allow lists every method of the resource ------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/payments", "GET, POST"),
        ("DELETE", "/v1/payments", "GET, POST"),
        ("PUT", "/v1/payments/pay_x", "GET, OPTIONS"),
        ("GET", "/v1/payments/pay_x/refunds", "POST"),
        ("POST", "/v1/payments/pay_x/events", "GET, OPTIONS"),
        ("OPTIONS", "/healthz", "GET"),
    ],
)
def test_405_allows_every_method_the_path_takes(
    api: Api, method: str, path: str, allowed: str
) -> None:
    response = local_http.client().request(
        method, api.url + path, headers={"Authorization": f"Bearer {api.key}"}
    )
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert response.headers["allow"] == allowed
    documented = {m.upper() for m in document(api)["paths"][path.replace("pay_x", "{payment_id}")]}
    assert set(allowed.split(", ")) == documented


# --- amounts: a JSON number with no fraction is an integer -----------------------------------


def test_an_amount_with_a_zero_fraction_is_that_integer(api: Api, db: Conn) -> None:
    # The document says integer, and JSON Schema's integer is any number with no fraction.
    schemas = document(api)["components"]["schemas"]
    assert schemas["PaymentCreate"]["properties"]["amount"]["type"] == "integer"
    key = str(uuid.uuid4())
    body = json.dumps({**CARD, "amount": 548.0}).encode()
    first = api.pay(body, idem=key, **{"Content-Type": "application/json"})
    assert first.status_code == 202, first.text
    assert first.json()["amount"] == 548
    # The same amount written as an integer is the same request: its answer again.
    again = api.pay({**CARD, "amount": 548}, idem=key)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    db.execute(
        ("UPDATE api.payments SET status = 'succeeded', amount_received = amount WHERE id = %s"),
        (first.json()["id"],),
    )
    refund = api.post(
        f"/v1/payments/{first.json()['id']}/refunds", json.dumps({"amount": 5e1}).encode(),
        **{"Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"},
    )  # fmt: skip
    assert (refund.status_code, refund.json()["amount"]) == (202, 50)


@pytest.mark.parametrize("amount", [b"548.5", b"5.485e2", b"1e-3", b"1e400", b'"548"', b"true"])
def test_an_amount_with_a_fraction_or_not_a_number_is_refused(api: Api, amount: bytes) -> None:
    body = b'{"currency": "USD", "payment_method": "pm_card_visa", "amount": %s}' % amount
    response = api.pay(body, **{"Content-Type": "application/json"})
    assert response.status_code == 422
    assert (error_of(response)["code"], error_of(response)["param"]) == ("amount_invalid", "amount")


# --- text: the document says what the API refuses -------------------------------------------


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("metadata", {**CARD, "metadata": {"k\x00": "v"}}),
        ("metadata", {**CARD, "metadata": {"k": "v\x00"}}),
        ("description", {**CARD, "description": "a\x00b"}),
    ],
)
def test_text_holding_nul_is_refused_as_the_document_says(
    api: Api, field: str, body: dict[str, Any]
) -> None:
    response = api.pay(body)
    assert (response.status_code, error_of(response)["code"]) == (422, f"{field}_invalid")
    schema = document(api)["components"]["schemas"]["PaymentCreate"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(body)


# --- Last-Event-ID: its form declared, and kept ----------------------------------------------

LAST_EVENT_IDS = ["0", "1", "007", "999999999", "null", "", "-1", "1.0", "1000000000", "一"]


def test_last_event_id_is_refused_exactly_when_the_document_says_it_is_malformed(
    api: Api,
) -> None:
    doc = document(api)
    [header] = [
        p for p in operation(doc, "GET", "/v1/payments/{payment_id}/events")["parameters"]
        if p["in"] == "header" and p["name"] == "Last-Event-ID"
    ]  # fmt: skip
    pattern = header["schema"]["pattern"]
    payment = api.pay().json()
    for value in LAST_EVENT_IDS:
        well_formed = re.search(pattern, value) is not None
        response = stream(api, payment["id"], first_event=False, **{"Last-Event-ID": value})
        malformed = response.status_code == 400
        assert malformed != well_formed, (value, response.status_code, response.text)
        if malformed:
            assert error_of(response)["code"] == "last_event_id_invalid"


def test_a_last_event_id_after_the_latest_event_is_a_conflict(api: Api) -> None:
    payment = api.pay().json()
    response = stream(api, payment["id"], first_event=False, **{"Last-Event-ID": "2"})
    assert response.status_code == 409
    error = error_of(response)
    assert (error["code"], error["param"]) == ("last_event_id_unknown", "Last-Event-ID")
    doc = document(api)
    assert "last_event_id_unknown" in documented(
        doc, "GET", "/v1/payments/{payment_id}/events", 409
    )


# --- the event stream's frames as the document describes them ---------------------------------


def test_each_event_is_the_documented_frame_the_payment_as_get_shows_it(api: Api) -> None:
    doc = document(api)
    answer = operation(doc, "GET", "/v1/payments/{payment_id}/events")["responses"]["200"]
    event_schema = answer["content"]["text/event-stream"]["schema"]
    payment = api.pay().json()
    response = stream(api, payment["id"], first_event=True)
    assert response.status_code == 200
    fields = dict(line.split(": ", 1) for line in response.text.splitlines())
    event = {"event": "message", **fields}  # no event: field is the default, as SSE says
    conforms(doc, event_schema, event)
    # The frame's schema: the one the stream's schema refers to (each of its events).
    schemas = doc["components"]["schemas"]
    [data_schema] = [
        schemas[ref.rsplit("/", 1)[1]]["properties"]["data"]
        for ref in (alt.get("$ref") for alt in event_schema["anyOf"]) if ref is not None
    ]  # fmt: skip
    data = json.loads(event["data"])
    conforms(doc, data_schema["contentSchema"], data)
    assert data == api.get(f"/v1/payments/{payment['id']}").json()
    assert event["id"] == "1"  # the payment's version: as created


# --- every error code each operation answers is documented with its status ---------------------


def test_a_refusal_of_a_schema_valid_request_is_documented(api: Api, db: Conn) -> None:
    doc = document(api)
    key = str(uuid.uuid4())
    assert api.pay(idem=key).status_code == 202
    reused = api.pay({**CARD, "amount": 5}, idem=key)
    assert (reused.status_code, error_of(reused)["code"]) == (422, "idempotency_key_reused")
    assert "idempotency_key_reused" in documented(doc, "POST", "/v1/payments", 422)

    payment = api.pay().json()
    refunds = f"/v1/payments/{payment['id']}/refunds"
    early = api.post(refunds, {}, **{"Idempotency-Key": str(uuid.uuid4())})
    assert error_of(early)["code"] == "payment_not_refundable"
    db.execute(
        ("UPDATE api.payments SET status = 'succeeded', amount_received = amount WHERE id = %s"),
        (payment["id"],),
    )
    too_much = api.post(refunds, {"amount": 10**6}, **{"Idempotency-Key": str(uuid.uuid4())})
    assert error_of(too_much)["code"] == "amount_too_large"
    path = "/v1/payments/{payment_id}/refunds"
    assert "payment_not_refundable" in documented(doc, "POST", path, 409)
    assert "amount_too_large" in documented(doc, "POST", path, 422)
