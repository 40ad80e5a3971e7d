"""The API's OpenAPI document, complete: what merchants (and the fuzzing tests) rely on.

Routes read their own bodies (to bound their size and keep the hot path lean), so FastAPI sees
neither the bodies nor the ``Idempotency-Key`` header nor the error answers. This fills them in
from the same request models and the one error envelope.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from workers.api.schemas import PaymentCreate, RefundCreate
from workers.core.requests import MAX_IDEMPOTENCY_KEY
from workers.core.status import PaymentStatus

REF = "#/components/schemas/{model}"
BODIES: dict[str, type[BaseModel]] = {
    "/v1/payments": PaymentCreate,
    "/v1/payments/{payment_id}/refunds": RefundCreate,
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "code", "message"],
            "additionalProperties": False,
            "properties": {
                "type": {
                    "type": "string",
                    "enum": ["invalid_request_error", "authentication_error", "api_error"],
                },
                "code": {"type": "string"},
                "param": {"type": "string"},
                "message": {"type": "string"},
            },
        }
    },
}
_NULLABLE_STRING = {"type": ["string", "null"]}
PAYMENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "status", "amount", "currency", "payment_method", "metadata"],
    "properties": {
        "id": {"type": "string", "pattern": "^pay_"},
        "object": {"const": "payment"},
        "status": {
            "enum": [status.value for status in PaymentStatus],
        },
        "amount": {"type": "integer", "minimum": 1},
        "currency": {"type": "string"},
        "payment_method": {"type": "string"},
        "description": _NULLABLE_STRING,
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "refunded_amount": {"type": "integer", "minimum": 0},
        "failure_reason": _NULLABLE_STRING,
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
    },
}
REFUND: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "payment_id", "amount", "status"],
    "properties": {
        "id": {"type": "string", "pattern": "^re_"},
        "object": {"const": "refund"},
        "payment_id": {"type": "string"},
        "amount": {"type": "integer", "minimum": 1},
        "reason": _NULLABLE_STRING,
        "status": {"type": "string"},
        "created_at": {"type": "string"},
    },
}
PAYMENT_LIST: dict[str, Any] = {
    "type": "object",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"$ref": REF.format(model="Payment")}},
        "has_more": {"type": "boolean"},
    },
}
IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "Scopes retries: the same key and request get the stored answer again.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
        "pattern": "^[!-~]+$",
    },
}
# (path, method) -> the schema of its success answer.
SUCCESS = {
    ("/v1/payments", "post"): "Payment",
    ("/v1/payments", "get"): "PaymentList",
    ("/v1/payments/{payment_id}", "get"): "Payment",
    ("/v1/payments/{payment_id}/refunds", "post"): "Refund",
}


def install(app: FastAPI) -> None:
    """Serve the complete document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            complete(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas |= {"Error": ERROR, "Payment": PAYMENT, "Refund": REFUND, "PaymentList": PAYMENT_LIST}
    for model in BODIES.values():
        schemas[model.__name__] = model.model_json_schema(ref_template=REF)
    components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            _complete_operation(path, method, operation)


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    operation["security"] = [{"apiKey": []}]
    success = next(iter(operation["responses"]))
    model = SUCCESS.get((path, method))
    operation["responses"] = {
        success: operation["responses"][success]
        if model is None
        else _json_answer("Accepted" if success == "202" else "OK", model),
        "4XX": _json_answer("Refused: the request, its key or its state (see error.code)", "Error"),
        "503": _json_answer("The database is unavailable for now; retry", "Error"),
    }
    if method == "post" and path in BODIES:
        operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
        operation["requestBody"] = {
            "required": BODIES[path] is PaymentCreate,  # a refund's body may be left out
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=BODIES[path].__name__)}}
            },
        }


def _json_answer(description: str, model: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }
