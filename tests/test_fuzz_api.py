"""The OpenAPI document is the contract: schemathesis, as a merchant's tooling runs it, finds no
difference between what /openapi.json says and what the API does.

schemathesis' CLI with every check and phase (examples, coverage, fuzzing, and stateful runs
along the document's links: create a payment, read it, follow its events, refund it) against
real processes: `flowpay serve-api`, the relay, the processor and the gateway simulator, so that
payments succeed and can be refunded. Then the database must hold exactly the payments the API
said it created, no refund above its payment, and nothing of the other merchant touched.

`make test` runs it with a fixed seed; `make chaos` with a random seed for longer:
CONTRACT_SEED=random CONTRACT_MAX_TIME=<seconds>.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tests.helpers.api import CARD, Api
from tests.helpers.contract import run_schemathesis
from tests.helpers.db import Conn
from tests.helpers.flow import flow
from tests.helpers.waiting import wait_for
from workers.api.merchants import create_merchant
from workers.core.config import Settings
from workers.core.db import admin_url

SEED = os.environ.get("CONTRACT_SEED", "1")
MAX_TIME_S = int(os.environ.get("CONTRACT_MAX_TIME", "0")) or None
# Enough for every operation and phase, bounded for CI.
MAX_EXAMPLES = None if MAX_TIME_S else 100
# Short keep-alives: an idle stream looks again soon.
STREAMS = {"FLOWPAY_API__STREAM_HEARTBEAT_S": "1"}


def _payments(db: Conn, merchant_id: str) -> set[str]:
    rows = db.execute("SELECT id FROM api.payments WHERE merchant_id = %s", (merchant_id,))
    return {str(r[0]) for r in rows}


def _held(api: Api) -> str:
    """A payment authorized for manual capture: what capture and cancel act on (a payment the
    run creates is still being authorized when a link reaches them)."""
    made = api.pay({**CARD, "capture_method": "manual"})
    assert made.status_code == 202, made.text
    payment_id: str = made.json()["id"]
    wait_for(lambda: api.get(f"/v1/payments/{payment_id}").json()["status"] == "requires_capture")
    return payment_id


@pytest.mark.timeout((MAX_TIME_S or 0) + 600)
def test_the_api_does_what_its_document_says(settings: Settings, tmp_path: Path) -> None:
    with (
        flow(settings, tmp_path, extra_env=STREAMS) as stack,
        psycopg.connect(admin_url(settings), autocommit=True) as db,
    ):
        neighbour = create_merchant(db, "Neighbour")
        theirs = Api(stack.api_url, neighbour.api_key, neighbour.id, stack.api_key).pay(CARD)
        keys = {"merchant": stack.api_key, "neighbour": neighbour.api_key}
        mine = Api(stack.api_url, stack.api_key, stack.merchant_id, stack.api_key)
        held = {name: _held(mine) for name in ("CONTRACT_CAPTURABLE", "CONTRACT_CANCELABLE")}
        run = run_schemathesis(
            stack.api_url,
            keys,
            tmp_path,
            seed=None if SEED == "random" else int(SEED),
            max_examples=MAX_EXAMPLES,
            max_time_s=MAX_TIME_S,
            env=held,
        )
        assert run.returncode == 0, run.output

        created = run.created_payments() | set(held.values())
        assert _payments(db, stack.merchant_id) == created
        over = db.execute(
            "SELECT p.id FROM api.payments p JOIN api.refunds r ON r.payment_id = p.id"
            " GROUP BY p.id, p.amount HAVING sum(r.amount) > p.amount"
        ).fetchall()
        assert not over, over
        assert _payments(db, neighbour.id) == {theirs.json()["id"]}
        refunded = db.execute(
            "SELECT count(*) FROM api.refunds WHERE payment_id = %s", (theirs.json()["id"],)
        ).fetchone()
        assert refunded == (0,)
