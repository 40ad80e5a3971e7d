"""The one JSON error envelope of the HTTP API, and the catalogue of its codes.

    {"error": {"type": "...", "code": "...", "param": "...", "message": "..."}}

``type`` is ``invalid_request_error`` (4xx about the request), ``authentication_error`` (401)
or ``api_error`` (5xx). ``ApiError`` carries one; the app turns it into a response.

Every code the API answers with is in ``CODES`` with its one status: the OpenAPI document
lists, per operation, the codes it can answer (``workers.api.openapi``), and the README lists
them all. A body field's refusal is ``<field>_invalid`` (``invalid_fields``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from workers.core.errors import FlowPayError

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
API_ERROR = "api_error"
TYPES: Final = (INVALID_REQUEST, AUTHENTICATION, API_ERROR)


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


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One code of the envelope: its status, its type, and what it means to a merchant."""

    status: int
    code: str
    meaning: str
    type: str = INVALID_REQUEST
    param: str | None = None  # the parameter it names, when always the same one
    retry_after: bool = False  # its answers carry Retry-After (seconds)

    def example(self) -> dict[str, Any]:
        """An answer with this code, as the API would send it."""
        return ApiError(
            self.status, self.code, self.meaning, param=self.param, type_=self.type
        ).envelope()


def _codes(*codes: ErrorCode) -> dict[str, ErrorCode]:
    return {c.code: c for c in codes}


CODES: Final = _codes(
    ErrorCode(400, "body_invalid_json", "The request body is not valid JSON."),
    ErrorCode(400, "idempotency_key_missing", "The request has no Idempotency-Key header."),
    ErrorCode(400, "signature_missing", "A Stripe webhook without its Stripe-Signature header."),
    ErrorCode(
        400,
        "signature_invalid",
        "A Stripe webhook whose Stripe-Signature does not verify or is over 300 s old.",
    ),
    ErrorCode(
        400,
        "idempotency_key_invalid",
        "Idempotency-Key is not 1 to 255 visible ASCII characters.",
    ),
    ErrorCode(
        400,
        "last_event_id_invalid",
        "Last-Event-ID is not an event id of the stream (a payment's: 1 to 9 digits; yours: "
        "evt_...).",
        param="Last-Event-ID",
    ),
    ErrorCode(
        401,
        "api_key_missing",
        "The request has no 'Authorization: Bearer <key>' header.",
        type=AUTHENTICATION,
    ),
    ErrorCode(
        401,
        "api_key_invalid",
        "The API key is unknown or revoked, or not sent as a bearer token.",
        type=AUTHENTICATION,
    ),
    ErrorCode(
        401,
        "client_secret_invalid",
        "The client secret is not this payment's (or there is no such payment).",
        type=AUTHENTICATION,
        param="client_secret",
    ),
    ErrorCode(
        403,
        "origin_not_allowed",
        "The page's Origin is not one the merchant allowed to use client secrets.",
        param="Origin",
    ),
    ErrorCode(
        404,
        "resource_missing",
        "No such payment: it does not exist, or it is another merchant's.",
        param="id",
    ),
    ErrorCode(
        405, "method_not_allowed", "The path does not take this method: Allow lists those it does."
    ),
    ErrorCode(
        409,
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still in flight: retry it shortly.",
    ),
    ErrorCode(
        409,
        "payment_not_refundable",
        "The payment has not succeeded, or nothing is left to refund.",
    ),
    ErrorCode(
        409,
        "payment_invalid_state",
        "The payment's status does not allow this: only a payment at requires_capture can be "
        "captured or canceled (the message names its status).",
    ),
    ErrorCode(
        409,
        "last_event_id_unknown",
        "Last-Event-ID is not an event of this stream: after the payment's latest, or none of "
        "your events still kept.",
        param="Last-Event-ID",
    ),
    ErrorCode(
        409,
        "webhook_endpoints_at_limit",
        "The merchant has as many webhook endpoints as allowed (the message says how many): "
        "delete one to add another.",
    ),
    ErrorCode(413, "request_too_large", "The request body is over the size limit."),
    ErrorCode(415, "unsupported_media_type", "The request body is not sent as application/json."),
    ErrorCode(422, "body_invalid", "The request body is not a JSON object."),
    ErrorCode(422, "parameter_missing", "A required field of the body is missing."),
    ErrorCode(422, "parameter_unknown", "The body has a field this operation does not take."),
    ErrorCode(422, "parameter_invalid", "A query parameter is invalid (param names it)."),
    ErrorCode(
        422,
        "insufficient_balance",
        "The payout is more than the balance available to pay out in its currency.",
        param="amount",
    ),
    ErrorCode(
        422,
        "amount_too_large",
        "The amount is more than is left: of the payment to refund, or of the authorization to "
        "capture (param names which).",
    ),
    # The body field's <field>_invalid, for a URL webhooks may not go to (webhook_urls' rules).
    ErrorCode(
        422,
        "url_invalid",
        "Webhooks may not go to this URL: https, outside private networks.",
        param="url",
    ),
    ErrorCode(
        422,
        "idempotency_key_reused",
        "This Idempotency-Key was used with a different request: use a new key.",
    ),
    ErrorCode(
        429,
        "rate_limited",
        "Too many requests with this API key: retry after Retry-After.",
        retry_after=True,
    ),
    ErrorCode(
        429,
        "too_many_streams",
        "Too many event streams are open with this API key: close one, then retry.",
    ),
    ErrorCode(500, "internal_error", "Something went wrong on our side.", type=API_ERROR),
    ErrorCode(
        503,
        "service_unavailable",
        "Temporarily unavailable: retry after Retry-After.",
        type=API_ERROR,
        retry_after=True,
    ),
)


def codes(*names: str) -> tuple[ErrorCode, ...]:
    """The catalogue's entries for ``names`` (a KeyError names one it does not have)."""
    return tuple(CODES[name] for name in names)


def invalid_fields(fields: Iterable[str]) -> tuple[ErrorCode, ...]:
    """``<field>_invalid`` (422) for each field of a request body."""
    return tuple(
        ErrorCode(422, f"{field}_invalid", f"{field} is not a valid value.", param=field)
        for field in fields
    )


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
