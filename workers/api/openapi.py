"""The API's OpenAPI document: the contract merchants generate their clients from.

Each route declares its whole operation where it is declared, with ``operation(...)``: a
stable id, its success answers and the error codes it can answer (``errors.CODES``); every
merchant route also gets the codes all of them share (authentication, rate limiting, an
unavailable database, a failure of ours). Routes that read their own bodies (to bound their
size and keep the hot path lean) declare their body model, which also brings the
``Idempotency-Key`` header and the body's ``<field>_invalid`` codes. ``install`` adds the
shared schemas and serves the result at ``/openapi.json``.

The document is OpenAPI 3.1, the newest version merchants' generators read
(openapi-python-client refuses 3.2), which has no ``itemSchema`` for the events of a stream.
``EVENT_STREAM`` is the closest it can say: the body is text (how 3.1, and so a generated
client, reads a ``text/event-stream`` schema) made of events that are each a ``PaymentEvent``
(what 3.2's ``itemSchema`` would say, and how schemathesis reads a 3.1 event stream): ``data``
the payment as ``GET`` shows it, ``id`` the payment's version.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Final

from fastapi import FastAPI, Path, Query
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from workers.api import endpoint_openapi, event_openapi, payout_openapi
from workers.api.client_secrets import VIEW_FIELDS
from workers.api.endpoint_schemas import (
    SecretRotation,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from workers.api.errors import CODES, TYPES, ErrorCode, codes, invalid_fields
from workers.api.schemas import (
    CancelCreate,
    CaptureCreate,
    PaymentCreate,
    PayoutCreate,
    RefundCreate,
)
from workers.core.requests import MAX_IDEMPOTENCY_KEY
from workers.core.status import CancellationReason, CaptureMethod, PaymentStatus

REF = "#/components/schemas/{model}"
Answers = dict[str, dict[str, Any]]


def ref(schema: str) -> dict[str, str]:
    """A reference to one of the document's schemas."""
    return {"$ref": REF.format(model=schema)}


DESCRIPTION: Final = """\
FlowPay's merchant API: create payments and refunds, read them, follow their status.

- **Capture later**: a payment created with `"capture_method": "manual"` is only authorized:
  it stops at `requires_capture` until you capture it (all or part of it: the rest is
  released) or cancel it; an authorization not captured within 7 days is canceled
  (`cancellation_reason: "expired"`).
- **Customer authentication**: a card that needs 3-D Secure puts the payment at
  `requires_action`; its `next_action` says what the customer must do (for a redirect, the URL
  to send them to). It then succeeds or fails as the gateway reports (a manual payment goes on
  to `requires_capture`), or fails with `action_expired` if the customer has not acted in time
  (a day by default).

- **Authentication**: `Authorization: Bearer <your API key>` on every `/v1` request.
- **Idempotency**: every `POST` carries an `Idempotency-Key`, new for each new request. The
  same request again with the key gets the first answer again (`Idempotent-Replayed: true`)
  and never acts twice; another request with the key is `422 idempotency_key_reused`.
- **Money**: amounts are integers of the currency's minor units (1999 USD is $19.99); a JSON
  number with no fraction (`1999.0`) is the same integer, one with a fraction is refused.
- **Errors** come in one envelope, `{"error": {"type", "code", "param", "message"}}`: each
  operation lists the codes it can answer under each status, with an example of each.
- **Live status**: `GET /v1/payments/{payment_id}/events` is a Server-Sent Events stream.
- **Browsers**: a payment's `client_secret` (on its creation) lets your checkout page read
  that one payment (`?client_secret=`, no key): its status, amount, currency, failure
  reason and next action, and its event stream. Pages on other origins need the origin
  allowed (CORS); `/checkout` is an example page.
"""
TAGS: Final = [
    {"name": "payments", "description": "Payments: create, read, list, follow, capture, cancel"},
    {"name": "refunds", "description": "Refunds of succeeded payments"},
    {"name": "events", "description": "Every event of your payments, kept for 30 days"},
    {"name": "webhook_endpoints", "description": "Where your webhooks go, and their secrets"},
    {"name": "payouts", "description": "Your balance, and paying it out"},
    {"name": "health", "description": "For load balancers and orchestrators: no key needed"},
    {"name": "checkout", "description": "An example page: a payment's live status in a browser"},
]

PAYMENT_ID_EXAMPLE: Final = "pay_01JBZ3N6Q8X5V7T9R2M4K6H8F0"
PaymentId = Annotated[
    str, Path(description="The payment's id (`pay_...`)", examples=[PAYMENT_ID_EXAMPLE])
]

# Every merchant route can answer these, whatever else it does.
MERCHANT_ERRORS: Final = codes(
    "api_key_missing", "api_key_invalid", "rate_limited", "service_unavailable"
)
# A route that reads its own JSON body (with an Idempotency-Key) can answer these.
BODY_ERRORS: Final = codes(
    "idempotency_key_missing", "idempotency_key_invalid", "body_invalid_json",
    "idempotency_key_in_use", "request_too_large", "unsupported_media_type", "body_invalid",
    "parameter_missing", "parameter_unknown", "idempotency_key_reused",
)  # fmt: skip

NO_NUL: Final = "^[^\\u0000]*$"  # requests.StrictBody refuses text holding U+0000
_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_MOMENT = {"type": "string", "format": "date-time"}

PAYMENT_EXAMPLE: Final[dict[str, Any]] = {
    "id": PAYMENT_ID_EXAMPLE,
    "object": "payment",
    "status": "succeeded",
    "amount": 1999,
    "currency": "USD",
    "payment_method": "pm_card_visa",
    "description": "Order 1042",
    "metadata": {"order_id": "1042"},
    "capture_method": "automatic",
    "amount_capturable": 0,
    "amount_received": 1999,
    "refunded_amount": 0,
    "failure_reason": None,
    "cancellation_reason": None,
    "next_action": None,
    "created_at": "2025-01-15T09:30:00.000000Z",
    "updated_at": "2025-01-15T09:30:01.250000Z",
}
ERROR: Final[dict[str, Any]] = {
    "type": "object",
    "description": "What went wrong. Programs read `code`: each operation lists its codes.",
    "required": ["type", "code", "message"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": list(TYPES)},
        "code": {"type": "string", "description": "What went wrong, for programs"},
        "param": {"type": "string", "description": "The parameter or field at fault"},
        "message": {"type": "string", "description": "What went wrong, for people"},
    },
    "examples": [CODES["idempotency_key_reused"].example()["error"]],
}
# Named apart from its one property: a generated client's Error.from_dict would shadow it.
ERROR_RESPONSE: Final[dict[str, Any]] = {
    "type": "object",
    "description": "Every error answer: one Error in an envelope.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": ref("Error")},
    "examples": [CODES["idempotency_key_reused"].example()],
}
PAYMENT: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A payment, as it stands after its latest change.",
    "required": list(PAYMENT_EXAMPLE),
    "properties": {
        "id": {"type": "string", "pattern": "^pay_[0-9A-HJKMNP-TV-Z]{26}$"},
        "object": {"type": "string", "enum": ["payment"]},
        "status": {
            "type": "string",
            "enum": [status.value for status in PaymentStatus],
        },
        "amount": {"type": "integer", "minimum": 1, "description": "In minor units"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217"},
        "payment_method": _STRING,
        "description": _NULLABLE_STRING,
        "metadata": {"type": "object", "additionalProperties": _STRING},
        "capture_method": {
            "type": "string",
            "enum": [m.value for m in CaptureMethod],
            "description": "`manual`: authorized only, until captured or canceled",
        },
        "amount_capturable": {
            "type": "integer",
            "minimum": 0,
            "description": "What the authorization holds that may be captured (minor units)",
        },
        "amount_received": {
            "type": "integer",
            "minimum": 0,
            "description": "What was captured (minor units): refunds take from it",
        },
        "refunded_amount": {"type": "integer", "minimum": 0, "description": "In minor units"},
        "failure_reason": {
            **_NULLABLE_STRING,
            "description": "Why a failed payment failed (`card_declined`, ...)",
        },
        "cancellation_reason": {
            "type": ["string", "null"],
            "enum": [*(r.value for r in CancellationReason), None],
            "description": "Why a canceled payment was canceled (`expired`: not captured in time)",
        },
        "next_action": {
            "anyOf": [ref("NextAction"), {"type": "null"}],
            "description": "While `requires_action`: what the customer must do before the payment"
            " can go on (3-D Secure); null in every other status",
        },
        "created_at": _MOMENT,
        "updated_at": _MOMENT,
        "client_secret": {
            **_NULLABLE_STRING,
            "description": "Hand it to your checkout page: it lets a browser read this payment "
            "alone (`?client_secret=`). Shown to you only (creation, `GET` and the stream with "
            "your key); null for a payment made before client secrets",
        },
    },
    "examples": [PAYMENT_EXAMPLE],
}
PAYMENT_VIEW: Final[dict[str, Any]] = {
    "type": "object",
    "description": "What a payment's client secret may read of it (a browser's view).",
    "required": list(VIEW_FIELDS),
    "additionalProperties": False,
    "properties": {name: PAYMENT["properties"][name] for name in VIEW_FIELDS},
    "examples": [{name: PAYMENT_EXAMPLE[name] for name in VIEW_FIELDS}],
}
NEXT_ACTION: Final[dict[str, Any]] = {
    "type": "object",
    "description": "What the customer must do, in Stripe's shape: `type` (`redirect_to_url`,"
    " `use_stripe_sdk`, ...) and, for a redirect, `redirect_to_url.url` to send them to",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
        "redirect_to_url": {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {"url": {"type": "string", "pattern": "^https://"}},
        },
    },
    "examples": [
        {
            "type": "redirect_to_url",
            "redirect_to_url": {"url": "https://hooks.stripe.com/3d_secure_2/hosted"},
        }
    ],
}
REFUND: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A refund requested: the payment shows it as refunded once the gateway has.",
    "required": ["id", "object", "payment_id", "amount", "reason", "status", "created_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^re_[0-9A-HJKMNP-TV-Z]{26}$"},
        "object": {"type": "string", "enum": ["refund"]},
        "payment_id": _STRING,
        "amount": {"type": "integer", "minimum": 1, "description": "In minor units"},
        "reason": _NULLABLE_STRING,
        "status": {"type": "string", "enum": ["requested"]},
        "created_at": _MOMENT,
    },
    "examples": [
        {
            "id": "re_01JBZ3QK2D4F6H8J0M2P4R6T8V",
            "object": "refund",
            "payment_id": PAYMENT_ID_EXAMPLE,
            "amount": 500,
            "reason": "requested_by_customer",
            "status": "requested",
            "created_at": "2025-01-16T11:00:00.000000Z",
        }
    ],
}
PAYMENT_LIST: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A page of payments, newest first.",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": ref("Payment")},
        "has_more": {"type": "boolean", "description": "Whether older payments follow"},
    },
    "examples": [{"object": "list", "data": [PAYMENT_EXAMPLE], "has_more": False}],
}
PAYMENT_EVENT: Final = event_openapi.sse_frame(
    "One Server-Sent Event of a payment's stream: the payment after one change.",
    {"pattern": "^[1-9][0-9]{0,8}$",
     "description": "The payment's version after the change (1: as created); "
     "send it back as Last-Event-ID to resume after it"},
    ["Payment", "PaymentView"],
    "The payment as `GET /v1/payments/{payment_id}` shows it to the stream's caller (with a "
    "client secret: its PaymentView)",
    {"id": "3", "data": '{"id":"pay_01JBZ3N6Q8X5V7T9R2M4K6H8F0","...":"..."}'},
)  # fmt: skip
EVENT_STREAM: Final = event_openapi.event_stream("PaymentEvent")
HEALTH: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
    "examples": [{"status": "ok"}],
}
READINESS: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ready"]}},
    "examples": [{"status": "ready"}],
}
BODIES: Final = (
    PaymentCreate, RefundCreate, CaptureCreate, CancelCreate, PayoutCreate,
    WebhookEndpointCreate, WebhookEndpointUpdate, SecretRotation,
)  # fmt: skip
SCHEMAS: Final = {
    "ErrorResponse": ERROR_RESPONSE,
    "Error": ERROR,
    "Payment": PAYMENT,
    "PaymentView": PAYMENT_VIEW,
    "NextAction": NEXT_ACTION,
    "PaymentList": PAYMENT_LIST,
    "PaymentEvent": PAYMENT_EVENT,
    "Refund": REFUND,
    "Health": HEALTH,
    "Readiness": READINESS,
    **endpoint_openapi.SCHEMAS,
    **payout_openapi.SCHEMAS,
    **event_openapi.schemas(PAYMENT_EXAMPLE),
}

LOCATION: Final = {
    "description": "The payment's URL",
    "required": True,
    "schema": {"type": "string"},
}
REPLAYED: Final = {
    "description": "`true` when this is the stored answer to an earlier request with the key",
    "schema": {"type": "string", "enum": ["true"]},
}
REQUEST_ID: Final = {
    "description": "The request's id (the caller's X-Request-Id, else a new one): quote it to us",
    "required": True,
    "schema": _STRING,
}
RETRY_AFTER: Final = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 0},
}
IDEMPOTENCY_KEY: Final[dict[str, Any]] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "A new key for each new request (a UUID, say): the same request again with "
    "the same key gets the first answer again, and never acts twice.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
        "pattern": "^[!-~]+$",
        "examples": ["order-1042-attempt-1"],
    },
}


def json_answer(
    description: str,
    schema: str,
    *,
    headers: dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
    alternative: str | None = None,
) -> dict[str, Any]:
    """A success answer of one of the document's schemas (or of ``alternative``), with
    X-Request-Id."""
    body = ref(schema) if alternative is None else {"anyOf": [ref(schema), ref(alternative)]}
    answer: dict[str, Any] = {
        "description": description,
        "headers": {"X-Request-Id": REQUEST_ID, **(headers or {})},
        "content": {"application/json": {"schema": body}},
    }
    if links:
        answer["links"] = links
    return answer


def page_limit(things: str) -> Any:
    """A list route's ``limit`` parameter (``things`` per page, 1 to 100)."""
    return Query(ge=1, le=100, description=f"{things} per page")


def starting_after(thing: str, example: str) -> Any:
    """A list route's ``starting_after`` parameter: the last ``thing`` id of the page before."""
    return Query(
        max_length=255,
        description=f"The last {thing} id of the previous page: the page after it",
        examples=[example],
    )


def link(
    operation_id: str, payment_id: str, description: str, parameter: str = "payment_id"
) -> dict[str, Any]:
    """A link to ``operation_id`` with its ``parameter`` (the payment id, unless named) found
    at ``payment_id`` (an expression)."""
    return {
        "operationId": operation_id,
        "parameters": {parameter: payment_id},
        "description": description,
    }


# From a payment (created or read) to what a merchant decides about one authorized manually.
DECISION_LINKS: Final = {
    "CapturePayment": link("capturePayment", "$response.body#/id", "Capture it (manual capture)"),
    "CancelPayment": link("cancelPayment", "$response.body#/id", "Cancel it (manual capture)"),
}


def operation(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    answers: Answers,
    errors: Iterable[ErrorCode] = (),
    parameters: Iterable[dict[str, Any]] = (),
    body: type[BaseModel] | None = None,
    body_bytes: int = 0,
    authenticated: bool = True,
    browser: bool = False,
) -> dict[str, Any]:
    """FastAPI's route keyword arguments for an operation, as the document shows it.

    ``answers`` are its success answers by status; ``errors`` the codes it can answer beyond
    those every merchant route (``authenticated``) shares, and those of its ``body``;
    ``parameters`` those it reads from the request itself (FastAPI documents the others);
    ``body_bytes`` the most its body may weigh (a limit no schema can state); ``browser``: a
    payment's client secret may stand in for the key (``workers.api.client_secrets``).
    """
    declared = list(errors)
    extra: dict[str, Any] = {
        "security": [{"apiKey": []}] if authenticated else [],
        "parameters": list(parameters),
    }
    if authenticated:
        declared = [*MERCHANT_ERRORS, *declared]
    if browser:
        # The secret is a query parameter (EventSource sends no headers): no security scheme.
        extra["security"].append({})
        declared += codes("client_secret_invalid", "origin_not_allowed", "parameter_invalid")
    if body is not None:
        if body_bytes < 1:
            raise TypeError(f"{operation_id}: a body needs the most it may weigh (body_bytes)")
        declared += [*BODY_ERRORS, *invalid_fields(body.model_fields)]
        extra["parameters"].append(IDEMPOTENCY_KEY)
        extra["requestBody"] = {
            # A body all of whose fields are optional may be left out.
            "required": any(f.is_required() for f in body.model_fields.values()),
            "description": f"JSON of at most {body_bytes} bytes (more is 413 request_too_large)",
            "content": {"application/json": {"schema": ref(body.__name__)}},
        }
    extra["responses"] = {**answers, **error_answers([*declared, CODES["internal_error"]])}
    return {
        "operation_id": operation_id,
        "summary": summary,
        "tags": [tag],
        "openapi_extra": extra,
    }


def error_answers(declared: Iterable[ErrorCode]) -> Answers:
    """One answer per status: the error envelope, with an example of each code it can carry."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in declared:
        by_status.setdefault(code.status, []).append(code)
    answers: Answers = {}
    for status, group in sorted(by_status.items()):
        headers: dict[str, Any] = {"X-Request-Id": REQUEST_ID}
        if any(c.retry_after for c in group):
            headers["Retry-After"] = {
                **RETRY_AFTER, "required": all(c.retry_after for c in group)
            }  # fmt: skip
        answers[str(status)] = {
            "description": " ".join(f"`{c.code}`: {c.meaning}" for c in group),
            "headers": headers,
            "content": {
                "application/json": {
                    "schema": ref("ErrorResponse"),
                    "examples": {c.code: {"value": c.example()} for c in group},
                }
            },
        }
    return answers


def documented_codes(answer: dict[str, Any]) -> set[str]:
    """The error codes an error answer of the document can carry."""
    return set(answer.get("content", {}).get("application/json", {}).get("examples", {}))


def refusing_nul(schema: Any) -> Any:
    """A body's schema, saying what its model refuses: text holding U+0000 (as PostgreSQL does)."""
    if isinstance(schema, list):
        return [refusing_nul(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    said = {k: v if k == "examples" else refusing_nul(v) for k, v in schema.items()}
    if said.get("type") == "string" and not {"pattern", "enum"} & said.keys():
        said["pattern"] = NO_NUL
    if isinstance(said.get("propertyNames"), dict):
        said["propertyNames"] = {"pattern": NO_NUL, **said["propertyNames"]}
    return said


def install(app: FastAPI) -> None:
    """Serve the complete document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            complete(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> None:
    """Add the shared schemas; drop FastAPI's own validation answers (the API has none)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas |= SCHEMAS
    for model in BODIES:
        schemas[model.__name__] = refusing_nul(model.model_json_schema(ref_template=REF))
    components["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "Your API key (`sk_live_...`): `Authorization: Bearer <key>`",
        }
    }
    for operations in document["paths"].values():
        for operation_ in operations.values():
            answers = operation_["responses"]
            for status in [s for s, a in answers.items() if "HTTPValidationError" in str(a)]:
                del answers[status]
