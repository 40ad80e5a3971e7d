"""The merchant HTTP API (FastAPI). Routes stay thin: parsing, auth and idempotency live beside."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException

from workers.api import (
    browser_routes,
    checkout_page,
    decisions,
    endpoint_routes,
    event_routes,
    event_stream,
    handling,
    openapi,
    payments,
    payout_routes,
    read_model,
    stream,
    stripe_webhooks,
)
from workers.api.errors import API_ERROR, ApiError, codes
from workers.api.idempotency import Answer, request_hash
from workers.api.metrics import RequestMetrics
from workers.api.request_context import RequestContext
from workers.api.routing import RequestRoute, allowed_methods
from workers.api.schemas import PaymentCreate, RefundCreate, parse_body
from workers.api.services import Services, services_of
from workers.core import heap, observe
from workers.core.config import Settings, load_settings
from workers.core.db import database_url
from workers.core.lifecycle import exit_with_parent
from workers.core.requests import BadRequest, check_idempotency_key

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url(settings, "api"),
            min_size=settings.database.pool_min_size,
            max_size=settings.database.pool_max_size,
            # Single statements are their own transactions (no BEGIN/COMMIT round trips);
            # what needs more opens a transaction of its own.
            kwargs={"autocommit": True},
            open=False,
            name="api",
        )
        await pool.open()
        app.state.services = Services(settings, pool)
        stop = threading.Event()
        thread = read_model.start(settings, stop) if settings.api.read_model else None
        heap.settle()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(settings.worker.grace_period_s)
            await pool.close()

    app = FastAPI(
        title="FlowPay API",
        version="1",
        description=openapi.DESCRIPTION,
        openapi_tags=openapi.TAGS,
        lifespan=lifespan,
        # Per-request telemetry hooks cost CPU on the hot path; tracing is wired separately.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    _install_error_handlers(app)
    _install_routes(app, settings)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestContext)
    feed = stream.change_feed(settings)
    app.include_router(stream.router(settings, feed))
    # Before /v1/events/{event_id}, which would take "stream" for an event id.
    app.include_router(event_stream.router(settings, feed))
    app.include_router(browser_routes.router())
    app.include_router(checkout_page.router())
    app.include_router(decisions.router(settings))
    app.include_router(endpoint_routes.router(settings))
    app.include_router(event_routes.router(settings))
    app.include_router(stripe_webhooks.router(settings))
    app.include_router(payout_routes.router(settings))
    openapi.install(app)
    return app


def _install_routes(app: FastAPI, settings: Settings) -> None:
    limit = settings.api.max_body_bytes
    by_id = "$response.body#/id"

    async def create_payment(request: Request) -> Response:
        raw = await handling.read_body(request, limit)
        services = services_of(request)
        merchant_id = await handling.merchant(request)
        key = check_idempotency_key(request.headers.get("idempotency-key"))
        body = parse_body(PaymentCreate, raw)
        correlation_id = handling.correlation_id(request)
        fingerprint = request_hash("POST", handling.path(request), body.canonical())
        answer = await payments.create_payment(
            services.pool, merchant_id, key, fingerprint, body, correlation_id
        )
        return handling.answer(answer, correlation_id)

    # The hot path, called without FastAPI's dependency solving (it takes the request alone).
    app.router.add_api_route(
        "/v1/payments", create_payment, methods=["POST"], status_code=202,
        route_class_override=RequestRoute,
        **openapi.operation(
            "createPayment", "Create a payment", tag="payments",
            body=PaymentCreate, body_bytes=limit,
            answers={"202": openapi.json_answer(
                "Accepted: the payment as created (or, for a retry, as first answered)",
                "Payment",
                headers={"Location": openapi.LOCATION, "Idempotent-Replayed": openapi.REPLAYED},
                links={
                    "GetPayment": openapi.link("getPayment", by_id, "Read it"),
                    "StreamPaymentEvents": openapi.link(
                        "streamPaymentEvents", by_id, "Follow its status"
                    ),
                    "CreateRefund": openapi.link("createRefund", by_id, "Refund it"),
                    **openapi.DECISION_LINKS,
                },
            )},
        ),
    )  # fmt: skip

    @app.get(
        "/v1/payments/{payment_id}",
        **openapi.operation(
            "getPayment", "Read a payment (with its client secret: a browser's reduced view)",
            tag="payments", browser=True,
            errors=codes("resource_missing"),
            answers={"200": openapi.json_answer(
                "The payment (with client_secret: its PaymentView)", "Payment",
                alternative="PaymentView",
                links={
                    "StreamPaymentEvents": openapi.link(
                        "streamPaymentEvents", by_id, "Follow its status"
                    ),
                    "CreateRefund": openapi.link("createRefund", by_id, "Refund it"),
                    **openapi.DECISION_LINKS,
                },
            )},
        ),
    )  # fmt: skip
    async def get_payment(
        request: Request,
        payment_id: openapi.PaymentId,
        client_secret: browser_routes.ClientSecret = None,
    ) -> Response:
        if client_secret is not None:
            return await browser_routes.read_payment(request, payment_id, client_secret)
        services = services_of(request)
        merchant_id = await handling.merchant(request)
        payment = await payments.get_payment(services.pool, merchant_id, payment_id)
        return handling.json_response(payment, handling.correlation_id(request))

    @app.get(
        "/v1/payments",
        **openapi.operation(
            "listPayments", "List payments, newest first", tag="payments",
            errors=codes("parameter_invalid", "resource_missing"),
            answers={"200": openapi.json_answer("A page of payments", "PaymentList")},
        ),
    )  # fmt: skip
    async def list_payments(
        request: Request,
        limit: Annotated[int, openapi.page_limit("Payments")] = 10,
        starting_after: Annotated[
            str | None, openapi.starting_after("payment", openapi.PAYMENT_ID_EXAMPLE)
        ] = None,
        status: Annotated[
            str | None,
            Query(
                pattern="^(" + "|".join(payments.STATUSES) + ")$",
                description="Only payments in this status",
            ),
        ] = None,
    ) -> Response:
        services = services_of(request)
        merchant_id = await handling.merchant(request)
        page = await payments.list_payments(
            services.pool, merchant_id, limit=limit, starting_after=starting_after, status=status
        )
        return handling.json_response(page, handling.correlation_id(request))

    @app.post(
        "/v1/payments/{payment_id}/refunds",
        status_code=202,
        **openapi.operation(
            "createRefund", "Refund a payment (by default, what is left of it)", tag="refunds",
            body=RefundCreate, body_bytes=limit,
            errors=codes("resource_missing", "payment_not_refundable", "amount_too_large"),
            answers={"202": openapi.json_answer(
                "Accepted: the refund requested (or, for a retry, as first answered)", "Refund",
                headers={"Idempotent-Replayed": openapi.REPLAYED},
                links={"GetPayment": openapi.link(
                    "getPayment", "$response.body#/payment_id", "Read its payment"
                )},
            )},
        ),
    )  # fmt: skip
    async def create_refund(request: Request, payment_id: openapi.PaymentId) -> Response:
        async def refund(
            conn: AsyncConnection[Any], merchant_id: str, body: RefundCreate, correlation_id: str
        ) -> Answer:
            return await payments.request_refund(
                conn, merchant_id, payment_id, body, correlation_id
            )

        return await handling.idempotent_post(request, limit, RefundCreate, refund)

    @app.get(
        "/healthz",
        response_model=None,
        **openapi.operation(
            "getHealth", "Whether the server process is up", tag="health",
            authenticated=False,
            answers={"200": openapi.json_answer("Up", "Health")},
        ),
    )  # fmt: skip
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=None,
        **openapi.operation(
            "getReadiness", "Whether the server can reach its database", tag="health",
            authenticated=False, errors=codes("service_unavailable"),
            answers={"200": openapi.json_answer("Ready", "Readiness")},
        ),
    )  # fmt: skip
    async def readyz(request: Request) -> dict[str, str]:
        async with services_of(request).pool.connection(timeout=5) as conn:
            await conn.execute("SELECT 1")
        return {"status": "ready"}


def _install_error_handlers(app: FastAPI) -> None:
    """Expected failures to the envelope; one no handler takes is RequestContext's (a 500)."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        error = ApiError(exc.status, exc.code, exc.message, param=exc.param)
        return JSONResponse(error.envelope(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_query(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first: Any = exc.errors()[0]
        param = str(first["loc"][-1])
        error = ApiError(422, "parameter_invalid", f"{param}: {first['msg']}", param=param)
        return JSONResponse(error.envelope(), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "resource_missing", 405: "method_not_allowed"}.get(
            exc.status_code, "invalid_request"
        )
        error = ApiError(exc.status_code, code, str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
        return JSONResponse(error.envelope(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        error = ApiError(
            503, "service_unavailable", "Temporarily unavailable; retry", type_=API_ERROR
        )
        return JSONResponse(error.envelope(), status_code=503, headers={"Retry-After": "1"})


def app_from_environment() -> FastAPI:
    """uvicorn's factory for server processes: settings from FLOWPAY_CONFIG and FLOWPAY_*."""
    exit_with_parent()
    settings = load_settings()
    observe.start(settings, "api")
    return create_app(settings)
