"""A small async client of FlowPay's merchant API (httpx), as a merchant's code would use it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

TERMINAL = frozenset({"succeeded", "failed", "refunded"})


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    seconds: float
    replayed: bool

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error")
        return str(error.get("code")) if isinstance(error, dict) else None


class ApiClient:
    def __init__(
        self, base_url: str, api_key: str, *, connections: int = 64, timeout_s: float = 30.0
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=timeout_s,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._http.aclose()

    async def create_payment(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Reply:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return await self._send("POST", "/v1/payments", json=body, headers=headers)

    async def get_payment(self, payment_id: str) -> Reply:
        return await self._send("GET", f"/v1/payments/{payment_id}")

    async def refund(
        self, payment_id: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Reply:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return await self._send(
            "POST", f"/v1/payments/{payment_id}/refunds", json=body, headers=headers
        )

    async def _send(self, method: str, path: str, **kwargs: Any) -> Reply:
        response = await self._http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"code": "not_json", "message": response.text[:200]}}
        return Reply(
            response.status_code,
            body if isinstance(body, dict) else {"data": body},
            response.elapsed.total_seconds(),
            response.headers.get("Idempotent-Replayed") == "true",
        )
