"""`/v1/payouts` and `/v1/balance`: the balance and its payouts (`workers.api.payouts`)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request, Response
from psycopg import AsyncConnection

from workers.api import handling, openapi, payouts
from workers.api.errors import codes
from workers.api.idempotency import Answer
from workers.api.payout_openapi import PAYOUT_EXAMPLE
from workers.api.schemas import PayoutCreate
from workers.api.services import services_of
from workers.core.config import Settings

PayoutId = Annotated[
    str, Path(description="The payout's id (`po_...`)", examples=[PAYOUT_EXAMPLE["id"]])
]
_BY_ID: Final = "$response.body#/id"


def router(settings: Settings) -> APIRouter:
    limit = settings.api.max_body_bytes
    routes = APIRouter()

    @routes.post(
        "/v1/payouts",
        status_code=202,
        **openapi.operation(
            "createPayout", "Pay out (part of) the available balance", tag="payouts",
            body=PayoutCreate, body_bytes=limit, errors=codes("insufficient_balance"),
            answers={"202": openapi.json_answer(
                "Accepted: the payout, pending (or, for a retry, as first answered)", "Payout",
                headers={"Location": openapi.LOCATION, "Idempotent-Replayed": openapi.REPLAYED},
                links={"GetPayout": openapi.link(
                    "getPayout", _BY_ID, "Read it", parameter="payout_id"
                )},
            )},
        ),
    )  # fmt: skip
    async def create_payout(request: Request) -> Response:
        async def act(
            conn: AsyncConnection[Any], merchant_id: str, body: PayoutCreate, correlation_id: str
        ) -> Answer:
            return await payouts.create_payout(conn, merchant_id, body, correlation_id)

        return await handling.idempotent_post(request, limit, PayoutCreate, act)

    @routes.get(
        "/v1/payouts/{payout_id}",
        **openapi.operation(
            "getPayout", "Read a payout", tag="payouts", errors=codes("resource_missing"),
            answers={"200": openapi.json_answer("The payout", "Payout")},
        ),
    )  # fmt: skip
    async def get_payout(request: Request, payout_id: PayoutId) -> Response:
        merchant_id = await handling.merchant(request)
        found = await payouts.get_payout(services_of(request).pool, merchant_id, payout_id)
        return handling.json_response(found, handling.correlation_id(request))

    @routes.get(
        "/v1/payouts",
        **openapi.operation(
            "listPayouts", "List payouts, newest first", tag="payouts",
            errors=codes("parameter_invalid", "resource_missing"),
            answers={"200": openapi.json_answer("A page of payouts", "PayoutList")},
        ),
    )  # fmt: skip
    async def list_payouts(
        request: Request,
        limit: Annotated[int, openapi.page_limit("Payouts")] = 10,
        starting_after: Annotated[
            str | None, openapi.starting_after("payout", PAYOUT_EXAMPLE["id"])
        ] = None,
    ) -> Response:
        merchant_id = await handling.merchant(request)
        page = await payouts.list_payouts(
            services_of(request).pool, merchant_id, limit=limit, starting_after=starting_after
        )
        return handling.json_response(page, handling.correlation_id(request))

    @routes.get(
        "/v1/balance",
        **openapi.operation(
            "getBalance", "Read the balance: available to pay out, and pending", tag="payouts",
            answers={"200": openapi.json_answer("The balance, per currency", "Balance")},
        ),
    )  # fmt: skip
    async def get_balance(request: Request) -> Response:
        merchant_id = await handling.merchant(request)
        found = await payouts.balance(services_of(request).pool, merchant_id)
        return handling.json_response(found, handling.correlation_id(request))

    return routes
