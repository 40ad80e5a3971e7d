"""The routes of ``/v1/webhook_endpoints`` (Stripe's shape): a merchant's webhook endpoints.

What each does is ``workers.api.webhook_endpoints``; here: parsing, auth, idempotency and the
operations as the OpenAPI document shows them. Every ``POST`` takes an Idempotency-Key (a
retry of a ``POST`` that showed a secret gets the answer without it).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request, Response
from psycopg import AsyncConnection

from workers.api import handling, openapi, webhook_endpoints
from workers.api.endpoint_openapi import ENDPOINT_ID_EXAMPLE
from workers.api.endpoint_schemas import (
    SecretRotation,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from workers.api.errors import codes
from workers.api.idempotency import Answer
from workers.api.services import services_of
from workers.core.config import Settings
from workers.core.sealing import keyring

TAG: Final = "webhook_endpoints"
EndpointId = Annotated[
    str,
    Path(description="The endpoint's id (`we_...`)", examples=[ENDPOINT_ID_EXAMPLE]),
]
BY_ID: Final = "$response.body#/id"


def _links() -> dict[str, Any]:
    def to(operation_id: str, description: str) -> dict[str, Any]:
        return openapi.link(operation_id, BY_ID, description, parameter="endpoint_id")

    return {
        "GetWebhookEndpoint": to("getWebhookEndpoint", "Read it"),
        "UpdateWebhookEndpoint": to("updateWebhookEndpoint", "Change it"),
        "RotateWebhookEndpointSecret": to("rotateWebhookEndpointSecret", "Rotate its secret"),
        "DeleteWebhookEndpoint": to("deleteWebhookEndpoint", "Delete it"),
    }


def _endpoint(description: str, status: str = "200") -> dict[str, Any]:
    return {status: openapi.json_answer(description, "WebhookEndpoint", links=_links())}


def router(settings: Settings) -> APIRouter:
    limit = settings.api.max_body_bytes
    # New secrets are sealed before they go into their events: without a key the API refuses
    # to start (ConfigError), as the notifier does.
    keys = keyring(settings)
    routes = APIRouter()

    @routes.post(
        "/v1/webhook_endpoints",
        status_code=201,
        **openapi.operation(
            "createWebhookEndpoint", "Add a webhook endpoint (its secret is shown once)", tag=TAG,
            body=WebhookEndpointCreate, body_bytes=limit,
            errors=codes("webhook_endpoints_at_limit"),
            answers=_endpoint("Created: the endpoint, with its `secret`", "201"),
        ),
    )  # fmt: skip
    async def create_endpoint(request: Request) -> Response:
        async def work(
            conn: AsyncConnection[Any], merchant_id: str, body: WebhookEndpointCreate, cid: str
        ) -> Answer:
            url = await webhook_endpoints.checked_url(body.url, settings.notifier)
            return await webhook_endpoints.create(
                conn, keys, merchant_id, body, url, cid, most=settings.api.max_webhook_endpoints
            )

        return await handling.idempotent_post(request, limit, WebhookEndpointCreate, work)

    @routes.get(
        "/v1/webhook_endpoints",
        **openapi.operation(
            "listWebhookEndpoints", "List webhook endpoints, newest first", tag=TAG,
            errors=codes("parameter_invalid", "resource_missing"),
            answers={"200": openapi.json_answer("A page of endpoints", "WebhookEndpointList")},
        ),
    )  # fmt: skip
    async def list_endpoints(
        request: Request,
        limit: Annotated[int, openapi.page_limit("Endpoints")] = 10,
        starting_after: Annotated[
            str | None, openapi.starting_after("endpoint", ENDPOINT_ID_EXAMPLE)
        ] = None,
    ) -> Response:
        merchant_id = await handling.merchant(request)
        async with services_of(request).pool.connection() as conn:
            page = await webhook_endpoints.page(conn, merchant_id, limit, starting_after)
        return handling.json_response(page, handling.correlation_id(request))

    @routes.get(
        "/v1/webhook_endpoints/{endpoint_id}",
        **openapi.operation(
            "getWebhookEndpoint", "Read a webhook endpoint", tag=TAG,
            errors=codes("resource_missing"), answers=_endpoint("The endpoint"),
        ),
    )  # fmt: skip
    async def get_endpoint(request: Request, endpoint_id: EndpointId) -> Response:
        merchant_id = await handling.merchant(request)
        async with services_of(request).pool.connection() as conn:
            endpoint = await webhook_endpoints.get(conn, merchant_id, endpoint_id)
        return handling.json_response(endpoint, handling.correlation_id(request))

    @routes.post(
        "/v1/webhook_endpoints/{endpoint_id}",
        **openapi.operation(
            "updateWebhookEndpoint", "Change a webhook endpoint (what the body leaves out stays)",
            tag=TAG, body=WebhookEndpointUpdate, body_bytes=limit,
            errors=codes("resource_missing"), answers=_endpoint("The endpoint as changed"),
        ),
    )  # fmt: skip
    async def update_endpoint(request: Request, endpoint_id: EndpointId) -> Response:
        async def work(
            conn: AsyncConnection[Any], merchant_id: str, body: WebhookEndpointUpdate, cid: str
        ) -> Answer:
            url = None
            if body.url is not None:
                url = await webhook_endpoints.checked_url(body.url, settings.notifier)
            return await webhook_endpoints.update(conn, merchant_id, endpoint_id, body, url, cid)

        return await handling.idempotent_post(request, limit, WebhookEndpointUpdate, work)

    @routes.post(
        "/v1/webhook_endpoints/{endpoint_id}/rotate_secret",
        **openapi.operation(
            "rotateWebhookEndpointSecret",
            "A new signing secret (shown once); the current ones sign beside it until they expire",
            tag=TAG, body=SecretRotation, body_bytes=limit,
            errors=codes("resource_missing"),
            answers=_endpoint("The endpoint, with its new `secret`"),
        ),
    )  # fmt: skip
    async def rotate_secret(request: Request, endpoint_id: EndpointId) -> Response:
        async def work(
            conn: AsyncConnection[Any], merchant_id: str, body: SecretRotation, cid: str
        ) -> Answer:
            return await webhook_endpoints.rotate_secret(
                conn, keys, merchant_id, endpoint_id, body.expires_in_s, cid
            )

        return await handling.idempotent_post(request, limit, SecretRotation, work)

    @routes.delete(
        "/v1/webhook_endpoints/{endpoint_id}",
        **openapi.operation(
            "deleteWebhookEndpoint", "Delete a webhook endpoint: it is sent nothing more", tag=TAG,
            errors=codes("resource_missing"),
            answers={"200": openapi.json_answer("Deleted", "DeletedWebhookEndpoint")},
        ),
    )  # fmt: skip
    async def delete_endpoint(request: Request, endpoint_id: EndpointId) -> Response:
        merchant_id = await handling.merchant(request)
        correlation_id = handling.correlation_id(request)
        async with services_of(request).pool.connection() as conn, conn.transaction():
            body = await webhook_endpoints.delete(conn, merchant_id, endpoint_id, correlation_id)
        return handling.answer(Answer(200, body), correlation_id)

    return routes
