"""Talking to a running merchant API in tests: a merchant's view of it, and its error envelope."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

CARD = {"amount": 1999, "currency": "USD", "payment_method": "pm_card_visa"}


@dataclass
class Api:
    """Merchant A (``key``) of a running server, beside merchant B (``other_key``)."""

    url: str
    key: str
    merchant_id: str
    other_key: str

    def post(
        self, path: str, body: Any = None, *, key: str | None = None, **headers: str
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {key or self.key}", **headers}
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        return httpx.post(self.url + path, content=body, headers=sent, timeout=30)

    def pay(self, body: Any = CARD, idem: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.post(
            "/v1/payments", body, **{"Idempotency-Key": idem or str(uuid.uuid4())}, **kwargs
        )

    def get(self, path: str, *, key: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.get(self.url + path, headers=headers, params=params, timeout=30)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error of a response in the one envelope (fails if the body is anything else)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) <= {"type", "code", "param", "message"}, body
    return dict(body["error"])


def table_counts(db: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
    """Rows in every table of the database: to show a request wrote (or dropped) nothing."""
    tables = db.execute(
        "SELECT schemaname || '.' || tablename FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).fetchall()
    return {
        name: int(db.execute(f"SELECT count(*) FROM {name}").fetchone()[0])  # type: ignore[index]
        for (name,) in tables
    }
