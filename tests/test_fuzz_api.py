"""Property-based fuzzing of the merchant API from its own OpenAPI document (schemathesis).

Requests generated from /openapi.json go to a real `flowpay serve-api` on a real database, both
valid ones (positive) and ones that break the document somewhere (negative). Every answer must
be documented, no 5xx, every error in the one envelope, every invalid request refused, and the
payments in the database must be exactly those the API reported creating.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import api as api_fixtures
from tests.helpers.api import CARD, Api, error_of
from workers.api.merchants import create_merchant

Conn = psycopg.Connection[tuple[Any, ...]]
# The module's API server and database (tests/helpers/api.py).
server, settings = api_fixtures.server, api_fixtures.settings
# Enough to reach every operation many times, bounded for CI (about 10 s per mode).
EXAMPLES = 150
OPERATIONS = r"^/v1/payments(/\{payment_id\}(/refunds)?)?$"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _payment_ids(db: Conn, merchant_id: str) -> set[str]:
    rows = db.execute("SELECT id FROM api.payments WHERE merchant_id = %s", (merchant_id,))
    return {str(r[0]) for r in rows}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_documented_answers_and_create_only_what_they_report(
    server: str, db: Conn, mode: GenerationMode
) -> None:
    merchant = create_merchant(db, "Fuzzed")
    other = create_merchant(db, "Bystander")
    bystander = Api(server, other.api_key, other.id, merchant.api_key)
    untouched = bystander.pay(CARD).json()
    db.execute("UPDATE api.payments SET status = 'succeeded' WHERE id = %s", (untouched["id"],))
    # Some payments the fuzzer can read and refund: it learns ids from list answers.
    mine = Api(server, merchant.api_key, merchant.id, other.api_key)
    seeded = {mine.pay(CARD).json()["id"] for _ in range(3)}
    db.execute("UPDATE api.payments SET status = 'succeeded' WHERE id = ANY(%s)", (list(seeded),))

    schema = schemathesis.openapi.from_url(server + "/openapi.json").include(path_regex=OPERATIONS)
    reported: set[str] = set()
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    # A fixed key: the document's security is tested apart (tests/test_security.py).
    auth = {"Authorization": f"Bearer {merchant.api_key}"}

    anywhere = schema.as_strategy(generation_mode=mode, headers=auth)
    # Half the time, aim at a real payment: ids drawn from a space of 26 characters never hit one.
    at_payment = schema.include(path_regex=r"^/v1/payments/\{payment_id\}(/refunds)?$").as_strategy(
        generation_mode=mode, headers=auth, path_parameters={"payment_id": sorted(seeded)[0]}
    )

    @given(case=st.one_of(anywhere, at_payment))
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: a failure prints its reproducing curl
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        response = case.call(
            base_url=server, headers={"Authorization": f"Bearer {merchant.api_key}"}
        )
        case.validate_response(response, checks=checks)
        if response.status_code >= 400:
            error_of(response)  # the envelope, whatever the documented schema allows
        elif case.method == "POST" and case.path == "/v1/payments":
            reported.add(response.json()["id"])

    fuzz()
    assert _payment_ids(db, merchant.id) == seeded | reported
    if mode is GenerationMode.NEGATIVE:
        assert not reported, "an invalid request created a payment"
    refunded = db.execute(
        "SELECT p.amount, coalesce(sum(r.amount), 0) FROM api.payments p"
        " LEFT JOIN api.refunds r ON r.payment_id = p.id WHERE p.id = ANY(%s) GROUP BY p.id",
        (list(seeded),),
    ).fetchall()
    assert all(total <= amount for amount, total in refunded), refunded
    assert _payment_ids(db, other.id) == {untouched["id"]}
    after = bystander.get(f"/v1/payments/{untouched['id']}").json()
    assert (after["status"], after["refunded_amount"]) == ("succeeded", 0)
