"""The simulator's error envelope, Stripe-style: ``{"error": {"type", "code", "message"}}``.

A copy of the idea in the merchant API rather than an import of it: services never import
each other, and the simulator stands for a system FlowPay does not own.
"""

from __future__ import annotations

import json
from typing import Any

INVALID_REQUEST = "invalid_request_error"
API_ERROR = "api_error"


class SimError(Exception):
    def __init__(self, status: int, code: str, message: str, *, type_: str = INVALID_REQUEST):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type_

    def envelope(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "code": self.code, "message": self.message}}

    def body(self) -> bytes:
        return json.dumps(self.envelope(), separators=(",", ":")).encode()


def not_found(what: str) -> SimError:
    return SimError(404, "resource_missing", f"No such {what}")


def unavailable() -> SimError:
    return SimError(
        503, "gateway_unavailable", "The gateway is unavailable; retry", type_=API_ERROR
    )
