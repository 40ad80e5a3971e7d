"""Security of the merchant API against a running `flowpay serve-api`: tenancy, keys, injection.

Merchants only ever see their own payments, and cannot tell another merchant's id from one that
does not exist; keys are hashed at rest and revocable; text reaches SQL only as parameters.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import env_for, flowpay
from tests.helpers import api as api_fixtures
from tests.helpers.api import CARD, Api, error_of, table_counts
from tests.helpers.db import Conn
from tests.helpers.waiting import wait_for
from workers.core import local_http
from workers.core.config import Settings
from workers.core.ids import new_id

# The module's API server, its database and two merchants per test (tests/helpers/api.py).
server, settings, api = api_fixtures.server, api_fixtures.settings, api_fixtures.api

INJECTIONS = [
    "'; DROP TABLE api.payments; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM api.merchants",
    "'); TRUNCATE api.api_keys CASCADE; --",
    "%(id)s",
    "$1 UNION SELECT key_hash FROM api.api_keys --",
    "\\'; SELECT pg_sleep(10); --",
]
# Idempotency keys are visible ASCII without spaces: the same attacks, spaces as comments.
KEY_INJECTIONS = [s.replace(" ", "/**/") for s in INJECTIONS]


def _succeed(db: Conn, payment_id: str) -> None:
    db.execute(
        ("UPDATE api.payments SET status = 'succeeded', amount_received = amount WHERE id = %s"),
        (payment_id,),
    )


# --- tenancy -----------------------------------------------------------------------------

GUESSES = [
    "pay_01KB2M7Q3ZP4WJ6XH8D0N5CRTE",  # well formed (a ULID of 2025), nobody's
    "pay_" + "0" * 26,
    "pay_" + "Z" * 26,
    "pay_",
    "pay",
    "x",
    "PAY_01KB2M7Q3ZP4WJ6XH8D0N5CRTE",
    "pay_" + "A" * 2000,
    "%2e%2e%2fmerchants",
    "' OR '1'='1",
    "pay_\u00e9\u4e2d",
]


def test_another_merchants_payment_answers_exactly_like_a_missing_one(api: Api, db: Conn) -> None:
    theirs = api.pay(key=api.other_key).json()
    _succeed(db, theirs["id"])
    missing = api.get(f"/v1/payments/{new_id('pay')}")
    assert missing.status_code == 404
    probes = [
        api.get(f"/v1/payments/{theirs['id']}"),
        api.get(f"/v1/payments/{theirs['id'].lower()}"),
        api.get(f"/v1/payments/{theirs['id']} "),
    ]
    for probe in probes:
        assert (probe.status_code, probe.content) == (404, missing.content)
    refund = api.post(
        f"/v1/payments/{theirs['id']}/refunds", {"amount": 1}, **{"Idempotency-Key": "steal"}
    )
    assert (refund.status_code, refund.content) == (404, missing.content)
    assert db.execute(
        "SELECT count(*) FROM api.refunds WHERE payment_id = %s", (theirs["id"],)
    ).fetchone() == (0,)
    after = api.get(f"/v1/payments/{theirs['id']}", key=api.other_key).json()
    assert after["refunded_amount"] == 0


@pytest.mark.parametrize("guess", GUESSES)
def test_guessed_payment_ids_are_404_for_read_and_refund(api: Api, db: Conn, guess: str) -> None:
    api.pay(key=api.other_key)
    read = api.get(f"/v1/payments/{guess}")
    assert read.status_code == 404, read.text
    assert error_of(read)["code"] == "resource_missing"
    refund = api.post(f"/v1/payments/{guess}/refunds", {}, **{"Idempotency-Key": str(uuid.uuid4())})
    assert refund.status_code == 404, refund.text
    assert error_of(refund)["code"] == "resource_missing"
    cursor = api.get("/v1/payments", starting_after=guess[:255])
    assert cursor.status_code == 404, cursor.text


def test_ids_holding_nul_are_404_like_any_missing_payment(api: Api) -> None:
    # Found by the fuzzer: PostgreSQL cannot compare a text holding U+0000, so these were 500s.
    nul = "pay_%00x"  # decoded by the server
    answers = [
        api.get(f"/v1/payments/{nul}"),
        api.post(f"/v1/payments/{nul}/refunds", {}, **{"Idempotency-Key": str(uuid.uuid4())}),
        api.get(f"/v1/payments/{nul}/events"),
    ]
    for answer in answers:
        assert (answer.status_code, error_of(answer)["code"]) == (404, "resource_missing")
    cursor = api.get("/v1/payments", starting_after="pay_\x00x")
    assert cursor.status_code == 404
    assert error_of(cursor)["param"] == "starting_after"


def test_lists_never_show_another_merchants_payments_under_any_filter(api: Api) -> None:
    mine = {api.pay().json()["id"] for _ in range(2)}
    theirs = {api.pay(key=api.other_key).json()["id"] for _ in range(3)}
    seen: set[str] = set()
    for params in ({}, {"limit": 100}, {"status": "initiated"}, {"status": "succeeded"}):
        page = api.get("/v1/payments", **params)
        assert page.status_code == 200
        seen |= {p["id"] for p in page.json()["data"]}
    assert seen == mine
    assert not seen & theirs


# --- API keys ----------------------------------------------------------------------------

BAD_AUTHORIZATIONS = [
    b"Bearer",
    b"Bearer  sk_live_abc",
    b"Bearer sk_live_abc sk_live_def",
    b"Token sk_live_abc",
    b"sk_live_abc",
    b"Bearer sk_live_" + b"A" * 5000,
    b"Bearer \xff\xfe",
    b"Bearer sk_live_\xc3\xa9t\xc3\xa9",
    b"Bearer ' OR '1'='1",
]
ROUTES = [
    ("GET", "/v1/payments"),
    ("GET", "/v1/payments/" + "pay_" + "0" * 26),
    ("POST", "/v1/payments"),
    ("POST", "/v1/payments/" + "pay_" + "0" * 26 + "/refunds"),
]


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS)
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_malformed_or_wrong_keys_are_401_on_every_route(
    api: Api, db: Conn, method: str, path: str, authorization: bytes
) -> None:
    # Bytes throughout: the authorization is raw bytes, and httpx takes no mix of str and bytes.
    headers = {
        b"Authorization": authorization,
        b"Idempotency-Key": str(uuid.uuid4()).encode(),
        b"Content-Type": b"application/json",
    }
    body = json.dumps(CARD) if method == "POST" else None
    before = table_counts(db)
    response = local_http.client().request(
        method, api.url + path, content=body, headers=headers, timeout=30
    )
    assert response.status_code == 401, response.text
    assert error_of(response)["type"] == "authentication_error"
    assert table_counts(db) == before


def test_a_valid_key_of_one_merchant_with_another_prefix_or_case_is_refused(api: Api) -> None:
    for wrong in (api.key.upper(), api.key[:-1], api.key + "x", api.key.replace("sk_live_", "")):
        response = api.get("/v1/payments", key=wrong)
        assert response.status_code == 401


def test_no_table_holds_a_key_in_plaintext(api: Api, db: Conn) -> None:
    api.pay()  # the key has been used, cached and recorded wherever a request goes
    secret_part = api.key.removeprefix("sk_live_")
    for table in table_counts(db):
        hits = db.execute(
            f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", (f"%{secret_part}%",)
        ).fetchone()
        assert hits == (0,), table
    stored = db.execute(
        "SELECT key_hash FROM api.api_keys WHERE merchant_id = %s", (api.merchant_id,)
    ).fetchone()
    assert stored == (hashlib.sha256(api.key.encode()).digest(),)


def _cli_json(settings: Settings, *args: str) -> Any:
    done = flowpay(*args, "--json", env=env_for(settings))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_revoked_key_is_refused_promptly_while_the_merchants_other_key_works(
    api: Api, settings: Settings
) -> None:
    keys = _cli_json(settings, "merchants", "keys", api.merchant_id)
    assert len(keys) == 1
    second = _cli_json(settings, "merchants", "create-key", api.merchant_id)
    assert second["api_key"].startswith("sk_live_")
    for key in (api.key, second["api_key"]):  # both work, and the first is now cached
        assert api.get("/v1/payments", key=key).status_code == 200

    revoked = _cli_json(settings, "merchants", "revoke-key", keys[0]["id"])
    revoked_by = time.monotonic()
    assert revoked["revoked_at"] is not None
    # Refused within the key cache's lifetime (api.key_cache_s, 2 s) plus margin for a loaded
    # machine; the old 30 s cache would fail this.
    wait_for(
        lambda: api.get("/v1/payments").status_code == 401,
        timeout_s=settings.api.key_cache_s + 8,
        what="the revoked key to be refused",
    )
    # That was one server process; the other may still hold the key in its own cache until
    # the lifetime has passed since the revocation, and not a moment longer.
    time.sleep(max(0.0, revoked_by + settings.api.key_cache_s - time.monotonic()))
    for _ in range(6):  # whichever server process answers
        assert error_of(api.get("/v1/payments"))["code"] == "api_key_invalid"
    assert api.get("/v1/payments", key=second["api_key"]).status_code == 200
    listed = _cli_json(settings, "merchants", "keys", api.merchant_id)
    assert [k["revoked_at"] is not None for k in listed] == [True, False]
    assert json.dumps(listed).find(second["api_key"]) == -1


@pytest.mark.parametrize(
    "args",
    [
        ["merchants", "revoke-key", "key_nosuchkey"],
        ["merchants", "create-key", "mer_nosuchmerchant"],
        ["merchants", "keys", "mer_nosuchmerchant"],
    ],
)
def test_key_commands_on_unknown_ids_are_one_line_exit_2(
    settings: Settings, args: list[str]
) -> None:
    done = flowpay(*args, env=env_for(settings))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_revoking_twice_is_an_error_the_second_time(api: Api, settings: Settings) -> None:
    key_id = _cli_json(settings, "merchants", "keys", api.merchant_id)[0]["id"]
    assert flowpay("merchants", "revoke-key", key_id, env=env_for(settings)).returncode == 0
    again = flowpay("merchants", "revoke-key", key_id, env=env_for(settings))
    assert again.returncode == 2
    assert "no active API key" in again.stderr


# --- SQL injection -----------------------------------------------------------------------


@pytest.mark.parametrize("attack", INJECTIONS)
def test_injection_strings_in_text_fields_are_stored_verbatim(
    api: Api, db: Conn, attack: str
) -> None:
    before = table_counts(db)
    body = {**CARD, "description": attack, "metadata": {attack[:40]: attack, "k": attack}}
    key = KEY_INJECTIONS[INJECTIONS.index(attack)]
    created = api.pay(body, idem=key)
    assert created.status_code == 202, created.text
    payment = created.json()
    stored = db.execute(
        "SELECT description, metadata FROM api.payments WHERE id = %s", (payment["id"],)
    ).fetchone()
    assert stored == (attack, {attack[:40]: attack, "k": attack})
    assert db.execute(
        "SELECT key FROM api.idempotency_keys WHERE merchant_id = %s", (api.merchant_id,)
    ).fetchall() == [(key,)]
    assert api.pay(body, idem=key).content == created.content  # looked up by the same text

    _succeed(db, payment["id"])
    refund = api.post(
        f"/v1/payments/{payment['id']}/refunds",
        {"amount": 1, "reason": attack},
        **{"Idempotency-Key": key + "r"},
    )
    assert refund.status_code == 202, refund.text
    assert db.execute(
        "SELECT reason FROM api.refunds WHERE payment_id = %s", (payment["id"],)
    ).fetchall() == [(attack,)]

    after = table_counts(db)
    assert set(before) == set(after)  # nothing dropped
    assert all(after[t] >= before[t] for t in before), "rows deleted"
    grown = {t: after[t] - before[t] for t in ("api.payments", "api.refunds", "api.merchants")}
    assert grown == {"api.payments": 1, "api.refunds": 1, "api.merchants": 0}


@pytest.mark.parametrize("attack", INJECTIONS)
def test_injection_strings_in_checked_fields_and_queries_are_refused(
    api: Api, db: Conn, attack: str
) -> None:
    before = table_counts(db)
    for field in ("payment_method", "currency"):
        response = api.pay({**CARD, field: attack})
        assert response.status_code == 422, response.text
        assert error_of(response)["param"] == field
    if " " in attack:  # not a valid Idempotency-Key
        assert api.pay(idem=attack).status_code == 400
    status = api.get("/v1/payments", status=attack)
    assert status.status_code == 422
    cursor = api.get("/v1/payments", starting_after=attack)
    assert cursor.status_code == 404
    read = api.get(f"/v1/payments/{attack}")
    assert read.status_code == 404
    assert table_counts(db) == before


def test_injection_strings_through_the_cli_are_stored_verbatim(
    settings: Settings, db: Conn
) -> None:
    before = table_counts(db)
    env = env_for(settings)
    for attack in INJECTIONS:
        url = "https://example.com/hook?q=" + attack.replace(" ", "%20")
        done = flowpay(
            "merchants", "create", "--name", attack, "--webhook-url", url, "--json", env=env
        )
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        assert db.execute(
            "SELECT name FROM api.merchants WHERE id = %s", (created["id"],)
        ).fetchone() == (attack,)
        # The endpoint as the merchant's own (the notifier takes it from its event).
        assert db.execute(
            "SELECT url FROM api.webhook_endpoints WHERE merchant_id = %s", (created["id"],)
        ).fetchone() == (url,)
    after = table_counts(db)
    assert set(after) == set(before)
    assert after["api.merchants"] - before["api.merchants"] == len(INJECTIONS)
