"""Checks of FlowPay's own contract, added to schemathesis' (loaded as its hooks module).

- ``error_code_documented``: an error answer is the envelope, and its code is one the
  operation documents under that status (the response's examples, one per code).
- ``valid_post_refusals``: a schema-valid POST is refused 422 only for the state it met:
  ``idempotency_key_reused`` when the run had its key accepted with another request,
  ``amount_too_large`` when the refund is more than the run left of its payment,
  ``insufficient_balance`` when the payout is more than the refusal says is available. (The
  configuration lets schemathesis' positive_data_acceptance take a 422 on POSTs, since no
  schema can say that a key is new or an amount still left; this check keeps the rest.)
- ``created_resources_found``: what the run created is found by its creator until the run
  deletes it. It stands in for schemathesis' ensure_resource_availability (excluded), which
  takes a creation replayed with its key for a new resource: the answer is the first
  creation's, whose resource the run may have deleted since, and its 404 then is right.
- ``every_operation_succeeds``: each operation tested answered 2xx at least once, so a run
  that never reaches an operation's core (a refund of a succeeded payment, say) fails.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import schemathesis
from pydantic import ValidationError

from workers.api.openapi import BODIES, documented_codes

_MODELS = {model.__name__: model for model in BODIES}


def _is_positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _targets_operation(case: Any) -> bool:
    """False for requests sent with a method other than the operation's (405 probes)."""
    return bool(case.method.upper() == case.operation.method.upper())


def _error(response: Any) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body") from None
    if not isinstance(body, dict) or set(body) != {"error"} or "code" not in body["error"]:
        raise AssertionError(f"{response.status_code} outside the error envelope: {body}")
    return dict(body["error"])


@schemathesis.check
def error_code_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400 or not _targets_operation(case):
        return None
    answers = case.operation.definition.raw["responses"]
    answer = answers.get(str(response.status_code))
    if answer is None:
        return None  # status_code_conformance reports it
    code = _error(response)["code"]
    documented = documented_codes(answer)
    if code not in documented:
        raise AssertionError(
            f"{case.method} {case.path} answered {response.status_code} {code}, "
            f"which it does not document (documented: {', '.join(sorted(documented))})"
        )
    return None


def _body(case: Any, response: Any) -> Any:
    """The request's body as the API reads it (as sent, if the API would not)."""
    raw: bytes = response.request.body or b""
    content = case.operation.definition.raw.get("requestBody", {}).get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    model = _MODELS.get(ref.rsplit("/", 1)[-1])
    if model is not None:
        try:
            return model.model_validate_json(raw or b"{}").model_dump(mode="json")
        except ValidationError:
            pass
    return raw.decode("utf-8", "replace")


@schemathesis.check
class valid_post_refusals:  # a check is named by its class
    """A schema-valid POST refused 422 for what the request cannot show: the state it met."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}  # idempotency key -> the request first accepted with it
        self.left: dict[str, int] = {}  # payment id -> its amount less the refunds accepted
        self.seen: set[str] = set()  # answers already counted (a check may see one again)
        self.lock = threading.Lock()

    def after_response(self, ctx: Any, response: Any, case: Any) -> None:
        key = (case.headers or {}).get("Idempotency-Key")
        if case.method.upper() != "POST" or not isinstance(key, str):
            return
        body = _body(case, response)
        request = json.dumps([response.request.url, body], sort_keys=True)
        with self.lock:
            if 200 <= response.status_code < 300:
                self._accepted(key, request, json.loads(response.content))
                return
            if response.status_code != 422 or not _is_positive(case):
                return
            error = _error(response)
            unearned = self._unearned(error, key, request, body, case)
        if unearned:
            raise AssertionError(unearned)

    def _unearned(
        self, error: dict[str, Any], key: str, request: str, body: Any, case: Any
    ) -> str | None:
        """Why a 422 to a schema-valid request is not what the state the run left calls for."""
        code, message = error["code"], str(error.get("message", ""))
        if code == "idempotency_key_reused":
            first = self.first.get(key)
            if first is None or first == request:
                return "422 idempotency_key_reused for a key not accepted with another request"
            return None
        if code == "amount_too_large":
            left = self.left.get(case.path_parameters["payment_id"])
            amount = body.get("amount") if isinstance(body, dict) else None
            if left is None or amount is None or amount <= left:
                return f"422 amount_too_large for {amount}, with {left} left to refund"
            return None
        if code == "insufficient_balance":
            # The balance moves with the run's captures: the refusal's own figure, at its time
            # (below zero after refunds of what was paid out, as README says it may go).
            said = re.match(r"amount: (-?\d+) ", message)
            available = int(said[1]) if said else None
            amount = body.get("amount") if isinstance(body, dict) else None
            if available is None or amount is None or amount <= available:
                return f"422 insufficient_balance for {amount}, with {available} available"
            return None
        return f"A schema-valid request was refused 422 {code}"

    def _accepted(self, key: str, request: str, answer: dict[str, Any]) -> None:
        first = self.first.setdefault(key, request)
        if first != request or answer["id"] in self.seen:
            return  # a replay: nothing new
        self.seen.add(answer["id"])
        if answer["object"] == "payment":
            self.left[answer["id"]] = answer["amount"]
        elif answer["object"] == "refund" and answer["payment_id"] in self.left:
            self.left[answer["payment_id"]] -= answer["amount"]


@schemathesis.check
class created_resources_found:  # a check is named by its class
    """No 404 to its creator for what the run created (a POST to a collection) and has not
    deleted."""

    def __init__(self) -> None:
        self.creator: dict[str, str] = {}  # resource id -> the Authorization that created it
        self.deleted: set[str] = set()
        self.lock = threading.Lock()

    def after_response(self, ctx: Any, response: Any, case: Any) -> None:
        if not _targets_operation(case):
            return
        caller = response.request.headers.get("Authorization", "")
        ids = {str(v) for v in (case.path_parameters or {}).values()}
        ok, method = 200 <= response.status_code < 300, case.method.upper()
        lost: list[str] = []
        with self.lock:
            if ok and method == "POST" and not ids:
                answer = json.loads(response.content)
                if isinstance(answer, dict) and isinstance(answer.get("id"), str):
                    self.creator.setdefault(answer["id"], caller)
            elif ok and method == "DELETE":
                self.deleted |= ids
            elif response.status_code == 404:
                lost = [i for i in ids if self.creator.get(i) == caller and i not in self.deleted]
        if lost:
            raise AssertionError(f"{case.method} {case.path}: 404 for {', '.join(lost)}")


@schemathesis.check
class every_operation_succeeds:  # a check is named by its class
    def __init__(self) -> None:
        self.tested: set[str] = set()
        self.succeeded: set[str] = set()

    def after_response(self, ctx: Any, response: Any, case: Any) -> None:
        if not _targets_operation(case):
            return
        self.tested.add(case.operation.label)
        if 200 <= response.status_code < 300:
            self.succeeded.add(case.operation.label)

    def after_run(self, ctx: Any) -> None:
        never = sorted(self.tested - self.succeeded)
        if never:
            raise AssertionError(f"Never answered 2xx: {', '.join(never)}")
