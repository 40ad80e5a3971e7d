"""``GET /v1/events``: every event of a merchant's payments (Stripe's shape), newest first.

The read model records them (``api.events``) with the payment as it stood just after each; they
are kept ``api.events_retention_days``. An event's id is ``evt_`` and its event id's hex, so the
id a webhook's payload, a log line and this list show lead to the same event.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from workers.api.errors import not_found
from workers.core.sql import load_queries

Q = load_queries("workers.api")
PREFIX: Final = "evt_"
ID_PATTERN: Final = "^evt_[0-9a-f]{32}$"
# What ``type`` may be: event type names, with ``*`` for any run of characters.
TYPE_PATTERN: Final = "^[a-z_.*]{1,100}$"
Conn = AsyncConnection[Any]


def event_id(event_uuid: uuid.UUID) -> str:
    return PREFIX + event_uuid.hex


def parse_event_id(text: str, param: str = "id") -> uuid.UUID:
    """The event id behind ``evt_...``; 404 for anything that is none."""
    hex_ = text.removeprefix(PREFIX)
    if hex_ == text or len(hex_) != 32:
        raise not_found("event", param=param)
    try:
        return uuid.UUID(hex=hex_)
    except ValueError:
        raise not_found("event", param=param) from None


def like_pattern(type_: str | None) -> str:
    """SQL LIKE for a ``type`` filter: ``*`` matches any run of characters, nothing else does."""
    if type_ is None:
        return "%"
    escaped = type_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id(row["id"]),
        "object": "event",
        "type": row["type"],
        "created": int(row["created_at"].timestamp()),
        "data": {"object": row["data"]},
    }


def kept_since(retention_days: int, created_gte: int | None = None) -> datetime:
    """The oldest moment an answer shows: the retention's start, or ``created_gte`` if later."""
    oldest = datetime.now(UTC) - timedelta(days=retention_days)
    if created_gte is None:
        return oldest
    return max(oldest, datetime.fromtimestamp(created_gte, UTC))


async def get(conn: Conn, merchant_id: str, id_: str, retention_days: int) -> dict[str, Any]:
    params = {"id": parse_event_id(id_), "merchant_id": merchant_id,
              "since": kept_since(retention_days)}  # fmt: skip
    async with conn.cursor(row_factory=dict_row) as cursor:
        row = await (await cursor.execute(Q["event_get"], params)).fetchone()
    if row is None:
        raise not_found("event")
    return event_object(row)


async def page(
    conn: Conn,
    merchant_id: str,
    *,
    limit: int,
    starting_after: str | None,
    type_: str | None,
    created_gte: int | None,
    retention_days: int,
) -> dict[str, Any]:
    """A page of the merchant's events, newest first (oldest last: read a page backwards to
    replay what was missed in order)."""
    after_at, after_id = None, None
    async with conn.cursor(row_factory=dict_row) as cursor:
        if starting_after is not None:
            cursor_id = parse_event_id(starting_after, param="starting_after")
            params = {"id": cursor_id, "merchant_id": merchant_id}
            found = await (await cursor.execute(Q["event_cursor"], params)).fetchone()
            if found is None:
                raise not_found("event", param="starting_after")
            after_at, after_id = found["created_at"], found["id"]
        params = {
            "merchant_id": merchant_id, "since": kept_since(retention_days, created_gte),
            "type": like_pattern(type_), "after_at": after_at, "after_id": after_id,
            "limit": limit + 1,
        }  # fmt: skip
        rows = await (await cursor.execute(Q["events_page"], params)).fetchall()
    data = [event_object(r) for r in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit}
