"""A merchant holds at most `api.max_webhook_endpoints` webhook endpoints, however many are
asked for at once and through whichever server process; deleted ones free their place."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import env_for, flowpay
from tests.helpers.api import api_server, error_of
from tests.helpers.db import Conn
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import Settings

MOST = 3
LIMITED = {"FLOWPAY_API__MAX_WEBHOOK_ENDPOINTS": str(MOST), "FLOWPAY_API__READ_MODEL": "false"}
URL = "http://127.0.0.1:9/hooks"


async def _add_at_once(url: str, key: str, count: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def add(n: int) -> httpx.Response:
            idem = {"Idempotency-Key": str(uuid.uuid4())}
            body = {"url": f"{URL}/{n}"}
            return await client.post("/v1/webhook_endpoints", json=body, headers=idem)

        return list(await asyncio.gather(*(add(n) for n in range(count))))


@pytest.fixture
def limited(settings: Settings) -> Iterator[str]:
    with api_server(settings, workers=2, env=LIMITED) as (url, _):
        yield url


def test_endpoints_asked_for_at_once_never_exceed_the_limit(limited: str, db: Conn) -> None:
    merchant, other = create_merchant(db, "Many hooks"), create_merchant(db, "Other")
    answers = asyncio.run(_add_at_once(limited, merchant.api_key, 4 * MOST))

    assert sorted(r.status_code for r in answers) == [201] * MOST + [409] * (3 * MOST)
    for refused in (r for r in answers if r.status_code == 409):
        error = error_of(refused)
        assert error["code"] == "webhook_endpoints_at_limit"
        assert f"{MOST} webhook endpoints at most" in error["message"]
    held = db.execute(
        "SELECT count(*) FROM api.webhook_endpoints WHERE merchant_id = %s", (merchant.id,)
    ).fetchone()
    assert held == (MOST,)
    # Another merchant's endpoints are counted apart.
    assert [r.status_code for r in asyncio.run(_add_at_once(limited, other.api_key, 1))] == [201]


def test_a_deleted_endpoint_frees_its_place(limited: str, db: Conn) -> None:
    merchant = create_merchant(db, "Tidy")
    made = asyncio.run(_add_at_once(limited, merchant.api_key, MOST))
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    deleted = local_http.client().delete(
        f"{limited}/v1/webhook_endpoints/{made[0].json()['id']}", headers=headers, timeout=30
    )
    assert deleted.status_code == 200, deleted.text
    again = asyncio.run(_add_at_once(limited, merchant.api_key, 2))
    assert sorted(r.status_code for r in again) == [201, 409]


def test_the_operator_is_held_to_the_same_limit(limited: str, db: Conn, settings: Settings) -> None:
    merchant = create_merchant(db, "Operated")
    asyncio.run(_add_at_once(limited, merchant.api_key, MOST))
    args = ["--merchant", merchant.id, "--url", URL]
    done = flowpay("webhooks", "add-endpoint", *args, env={**env_for(settings), **LIMITED})
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        f"a merchant may have {MOST} webhook endpoints at most: delete one to add another"
    )
    assert len(done.stderr.strip().splitlines()) == 1
