"""The routes of ``/v1/events``: what ``workers.api.events`` answers, as the document shows it."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Path, Query, Request, Response

from workers.api import events, handling, openapi
from workers.api.errors import codes
from workers.api.event_openapi import EVENT_ID_EXAMPLE
from workers.api.services import services_of
from workers.core.config import Settings

TAG: Final = "events"
LAST_MOMENT: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
TypeFilter = Annotated[
    str | None,
    Query(
        alias="type",
        pattern=events.TYPE_PATTERN,
        description="Only events of this type; `*` matches any part (`payment.*`)",
        examples=["payment.*"],
    ),
]
EventId = Annotated[
    str, Path(description="The event's id (`evt_...`)", examples=[EVENT_ID_EXAMPLE])
]


def router(settings: Settings) -> APIRouter:
    retention_days = settings.api.events_retention_days
    routes = APIRouter()

    @routes.get(
        "/v1/events",
        **openapi.operation(
            "listEvents", "List the events of your payments, newest first", tag=TAG,
            errors=codes("parameter_invalid", "resource_missing"),
            answers={"200": openapi.json_answer(
                "A page of events", "EventList",
                # Not followed when the page is empty.
                links={"GetEvent": openapi.link(
                    "getEvent", "$response.body#/data/0/id", "Read the newest",
                    parameter="event_id",
                )},
            )},
        ),
    )  # fmt: skip
    async def list_events(
        request: Request,
        limit: Annotated[int, openapi.page_limit("Events")] = 10,
        starting_after: Annotated[
            str | None, openapi.starting_after("event", EVENT_ID_EXAMPLE)
        ] = None,
        type_: TypeFilter = None,
        created_gte: Annotated[
            int | None,
            Query(
                alias="created[gte]",
                ge=0,
                le=LAST_MOMENT,
                description="Only events since then (Unix seconds)",
            ),
        ] = None,
    ) -> Response:
        merchant_id = await handling.merchant(request)
        async with services_of(request).pool.connection() as conn:
            page = await events.page(
                conn, merchant_id, limit=limit, starting_after=starting_after, type_=type_,
                created_gte=created_gte, retention_days=retention_days,
            )  # fmt: skip
        return handling.json_response(page, handling.correlation_id(request))

    @routes.get(
        "/v1/events/{event_id}",
        **openapi.operation(
            "getEvent", "Read an event", tag=TAG, errors=codes("resource_missing"),
            answers={"200": openapi.json_answer("The event", "Event")},
        ),
    )  # fmt: skip
    async def get_event(request: Request, event_id: EventId) -> Response:
        merchant_id = await handling.merchant(request)
        async with services_of(request).pool.connection() as conn:
            event = await events.get(conn, merchant_id, event_id, retention_days)
        return handling.json_response(event, handling.correlation_id(request))

    return routes
