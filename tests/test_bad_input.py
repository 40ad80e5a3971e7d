"""Hostile and broken requests against a running `flowpay serve-api`: each gets its documented
4xx in the one envelope and writes nothing. (The everyday cases are in tests/test_api.py.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import api as api_fixtures
from tests.helpers.api import CARD, Api, error_of, table_counts
from tests.helpers.db import Conn
from workers.core import local_http

JSON = {"Content-Type": "application/json"}

# The module's API server, its database and two merchants per test (tests/helpers/api.py).
server, settings, api = api_fixtures.server, api_fixtures.settings, api_fixtures.api


@pytest.fixture
def paid(api: Api, db: Conn) -> str:
    """A succeeded payment of merchant A, to refund."""
    payment_id = str(api.pay().json()["id"])
    db.execute(
        ("UPDATE api.payments SET status = 'succeeded', amount_received = amount WHERE id = %s"),
        (payment_id,),
    )
    return payment_id


def _refused(db: Conn, send: Any, status: int, code: str) -> dict[str, Any]:
    """Send, expect ``status``/``code`` in the envelope, and no row written anywhere."""
    before = table_counts(db)
    response = send()
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    assert table_counts(db) == before
    return error


def _deep(depth: int) -> bytes:
    return b'{"amount": 1999, "currency": "USD", "payment_method": "pm", "metadata": ' + (
        b'{"a": ' * depth + b'"x"' + b"}" * depth + b"}"
    )


MALFORMED_JSON = [
    (b"", 422, "parameter_missing"),
    (b"{", 400, "body_invalid_json"),
    (b'{"amount": 1999,}', 400, "body_invalid_json"),
    (json.dumps(CARD).encode() + b" trailing", 400, "body_invalid_json"),
    (json.dumps(CARD).encode()[:-1], 400, "body_invalid_json"),
    (b"\xef\xbb\xbf" + json.dumps(CARD).encode(), 400, "body_invalid_json"),
    (
        b'{"amount": 1999, "currency": "USD", "payment_method": "\xff\xfe"}',
        400,
        "body_invalid_json",
    ),
    (b'{"amount": NaN, "currency": "USD", "payment_method": "pm"}', 422, "amount_invalid"),
    (b'{"amount": -Infinity, "currency": "USD", "payment_method": "pm"}', 422, "amount_invalid"),
    (b"null", 422, "body_invalid"),
    (b'"a string"', 422, "body_invalid"),
    (b"1999", 422, "body_invalid"),
    (b"[" * 20_000 + b"]" * 20_000, 400, "body_invalid_json"),
    (_deep(5_000), 400, "body_invalid_json"),
    (_deep(3), 422, "metadata_invalid"),
]


@pytest.mark.parametrize(("body", "status", "code"), MALFORMED_JSON)
def test_malformed_json_is_refused_and_writes_nothing(
    api: Api, db: Conn, body: bytes, status: int, code: str
) -> None:
    _refused(db, lambda: api.pay(body, **JSON), status, code)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json-patch+json",
        "application/xml",
    ],
)
def test_wrong_content_types_are_415(api: Api, db: Conn, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps(CARD).encode()
    _refused(db, lambda: api.pay(body, **headers), 415, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON"])
def test_json_content_type_variants_are_accepted(api: Api, content_type: str) -> None:
    response = api.pay(json.dumps(CARD).encode(), **{"Content-Type": content_type})
    assert response.status_code == 202, response.text


def test_huge_streamed_body_without_length_is_413(api: Api, db: Conn) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"description": "'
        for _ in range(2_000):  # 16 MB if it were all read
            yield b"x" * 8192
        yield b'"}'

    def send() -> httpx.Response:
        headers = {"Authorization": f"Bearer {api.key}", "Idempotency-Key": "big", **JSON}
        return local_http.client().post(
            api.url + "/v1/payments", content=chunks(), headers=headers, timeout=60
        )

    _refused(db, send, 413, "request_too_large")


def test_body_at_the_limit_is_read_and_judged_on_its_content(api: Api, db: Conn) -> None:
    body = json.dumps({**CARD, "description": "x" * 60_000}).encode()
    assert len(body) < 65_536
    _refused(db, lambda: api.pay(body, **JSON), 422, "description_invalid")


def _post_with_key(api: Api, key: bytes) -> httpx.Response:
    # Bytes throughout: the key is raw bytes, and httpx takes no mix of str and bytes.
    headers = {
        b"Authorization": f"Bearer {api.key}".encode(),
        b"Idempotency-Key": key,
        **{name.encode(): value.encode() for name, value in JSON.items()},
    }
    return local_http.client().post(
        api.url + "/v1/payments", content=json.dumps(CARD), headers=headers
    )


@pytest.mark.parametrize("key", [b"caf\xc3\xa9", b"\xff", "ключ".encode(), b"a b"])
def test_non_ascii_idempotency_keys_are_400(api: Api, db: Conn, key: bytes) -> None:
    _refused(db, lambda: _post_with_key(api, key), 400, "idempotency_key_invalid")


@pytest.mark.parametrize("key", [b"key\x7f", b"\x01key", b"k\x1b[31m"])
def test_control_characters_in_headers_are_refused_by_the_http_parser(
    api: Api, db: Conn, key: bytes
) -> None:
    # Not a valid HTTP header value: uvicorn answers 400 before FlowPay sees the request,
    # so this answer is uvicorn's plain text, not the envelope.
    before = table_counts(db)
    assert _post_with_key(api, key).status_code == 400
    assert table_counts(db) == before


@pytest.mark.parametrize("key", ["k", "~" * 255, "!#$%&'*+-.^_`|~", "a/b:c@d?e=f"])
def test_every_visible_ascii_key_up_to_255_is_accepted(api: Api, key: str) -> None:
    assert api.pay(idem=key).status_code == 202


TEXTS = [
    "café ☕ 中文 🎉",
    "right-to-left \u202e override",
    "tab\tnew\nline\rreturn",
    "bell\x07 escape\x1b[31m del\x7f",
    "\u00a0\u2028\u2029\ufeff",
]


@pytest.mark.parametrize("text", TEXTS)
def test_unicode_and_control_characters_in_text_fields_round_trip(
    api: Api, db: Conn, text: str
) -> None:
    body = {**CARD, "description": text, "metadata": {text[:40]: text}}
    created = api.pay(body)
    assert created.status_code == 202, created.text
    payment = api.get(f"/v1/payments/{created.json()['id']}").json()
    assert (payment["description"], payment["metadata"]) == (text, {text[:40]: text})


@pytest.mark.parametrize(
    "body",
    [
        {**CARD, "description": "nul\x00byte"},
        {**CARD, "metadata": {"k": "nul\x00byte"}},
        {**CARD, "metadata": {"nul\x00key": "v"}},
    ],
)
def test_nul_characters_postgres_cannot_store_are_422(
    api: Api, db: Conn, body: dict[str, Any]
) -> None:
    field = "description" if "description" in body else "metadata"
    _refused(db, lambda: api.pay(body), 422, f"{field}_invalid")


def test_nul_in_a_refund_reason_is_422(api: Api, db: Conn, paid: str) -> None:
    path = f"/v1/payments/{paid}/refunds"
    send = lambda: api.post(path, {"reason": "a\x00b"}, **{"Idempotency-Key": "nul"})  # noqa: E731
    _refused(db, send, 422, "reason_invalid")


AMOUNTS: list[bytes] = [
    b"9223372036854775807",  # bigint max, over the API's limit
    b"9223372036854775808",  # bigint max + 1
    b"18446744073709551616",  # 2**64
    b"-9223372036854775809",
    b"1" + b"0" * 4_000,  # a 4001-digit integer
    b"1e400",  # overflows a double
    b"1e13",  # a whole number, over the API's limit
    b"1999.5",  # a fraction (1999.0 is 1999: tests/test_api_contract.py)
    b"-0",
    b"0x7CF",
]


@pytest.mark.parametrize("amount", AMOUNTS)
def test_overflowing_or_non_integer_amounts_are_422(
    api: Api, db: Conn, paid: str, amount: bytes
) -> None:
    body = b'{"currency": "USD", "payment_method": "pm_card_visa", "amount": ' + amount + b"}"
    status, code = (
        (400, "body_invalid_json") if amount.startswith(b"0x") else (422, "amount_invalid")
    )
    _refused(db, lambda: api.pay(body, **JSON), status, code)
    refund = b'{"amount": ' + amount + b"}"
    path = f"/v1/payments/{paid}/refunds"
    idem = str(uuid.uuid4())
    _refused(db, lambda: api.post(path, refund, **JSON, **{"Idempotency-Key": idem}), status, code)


def test_list_parameters_that_overflow_are_422(api: Api, db: Conn) -> None:
    for params in ({"limit": "9" * 30}, {"limit": "-1"}, {"limit": "1e3"}, {"limit": ""}):
        _refused(db, lambda p=params: api.get("/v1/payments", **p), 422, "parameter_invalid")
    _refused(
        db, lambda: api.get("/v1/payments", starting_after="p" * 256), 422, "parameter_invalid"
    )
