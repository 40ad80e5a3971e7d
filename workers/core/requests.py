"""Checks every HTTP service of FlowPay makes on a request, with one error to report them.

Each service turns ``BadRequest`` into its own JSON error envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from workers.core.errors import FlowPayError

B = TypeVar("B", bound=BaseModel)
MAX_IDEMPOTENCY_KEY = 255
_CODES = {"missing": "parameter_missing", "extra_forbidden": "parameter_unknown"}


class StrictBody(BaseModel):
    """A request body: unknown fields refused, no coercion (a float or a string is no int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL's text and jsonb cannot hold U+0000: refuse it as a bad field, not a 500.
        if _has_nul(value):
            raise ValueError("must not contain the NUL character (U+0000)")
        return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class BadRequest(FlowPayError):
    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


def parse_body(model: type[B], raw: bytes, invalid_code: Callable[[str], str]) -> B:
    """A validated JSON body; the first problem becomes a BadRequest naming its field.

    ``invalid_code(field)`` names the code of an invalid value (``amount_invalid``, say).
    """
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _bad_body(exc, invalid_code) from None


def _bad_body(exc: ValidationError, invalid_code: Callable[[str], str]) -> BadRequest:
    error: Any = exc.errors(include_url=False, include_input=False)[0]
    if error["type"] == "json_invalid":
        return BadRequest(400, "body_invalid_json", "The request body is not valid JSON")
    if error["type"] == "model_type":
        return BadRequest(422, "body_invalid", "The request body must be a JSON object")
    param = ".".join(str(part) for part in error["loc"])
    code = _CODES.get(error["type"]) or invalid_code(str(error["loc"][0]))
    message = str(error["msg"]).removeprefix("Value error, ")
    return BadRequest(422, code, f"{param}: {message}", param)


def check_idempotency_key(key: str | None) -> str:
    """1 to 255 visible ASCII characters; BadRequest (400) otherwise."""
    if key is None:
        raise BadRequest(
            400, "idempotency_key_missing", "POST requests need an Idempotency-Key header"
        )
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not all("!" <= c <= "~" for c in key):
        raise BadRequest(
            400,
            "idempotency_key_invalid",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters",
        )
    return key
