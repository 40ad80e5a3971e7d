"""The one JSON error envelope of the HTTP API.

    {"error": {"type": "...", "code": "...", "param": "...", "message": "..."}}

``type`` is ``invalid_request_error`` (4xx about the request), ``authentication_error`` (401)
or ``api_error`` (5xx). ``ApiError`` carries one; the app turns it into a response.
"""

from __future__ import annotations

import math
from typing import Any

from workers.core.errors import FlowPayError

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
API_ERROR = "api_error"


class ApiError(FlowPayError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type_: str = INVALID_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type_
        self.headers = headers

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def not_found(what: str, param: str = "id") -> ApiError:
    return ApiError(404, "resource_missing", f"No such {what}", param=param)


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "api_key_invalid", message, type_=AUTHENTICATION)


def rate_limited(wait_s: float, per_s: float, burst: int) -> ApiError:
    seconds = max(1, math.ceil(wait_s))  # Retry-After counts whole seconds
    return ApiError(
        429, "rate_limited",
        f"Too many requests with this API key (at most {per_s:g} a second, {burst} at once):"
        f" retry after {seconds} s",
        headers={"Retry-After": str(seconds)},
    )  # fmt: skip


def too_many_streams(per_key: int) -> ApiError:
    return ApiError(
        429, "too_many_streams",
        f"This API key already has {per_key} event streams open, the most it may: close one",
    )  # fmt: skip
