"""The OpenAPI document itself: valid, stable, exemplified, and complete about errors.

Every operation is held to the same bar, so a route added later is checked as it lands: a
readable operation id, examples for every schema, every error answer in the one envelope with
an example of each code it can carry, and the codes every merchant route shares.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.conftest import ROOT
from tests.helpers.contract import conforms
from workers.api.app import create_app
from workers.api.errors import CODES
from workers.api.openapi import BODIES, MERCHANT_ERRORS, documented_codes
from workers.api.schemas import parse_body
from workers.core.config import load_settings

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# Merchants' generated code names its functions after these: renaming one breaks their code.
OPERATION_IDS = {
    ("post", "/v1/payments"): "createPayment",
    ("get", "/v1/payments"): "listPayments",
    ("get", "/v1/payments/{payment_id}"): "getPayment",
    ("post", "/v1/payments/{payment_id}/refunds"): "createRefund",
    ("get", "/v1/payments/{payment_id}/events"): "streamPaymentEvents",
    ("get", "/v1/events/stream"): "streamEvents",
    ("options", "/v1/payments/{payment_id}"): "preflightPayment",
    ("options", "/v1/payments/{payment_id}/events"): "preflightPaymentEvents",
    ("get", "/healthz"): "getHealth",
    ("get", "/readyz"): "getReadiness",
}


BROWSER_OPERATIONS = {"getPayment", "streamPaymentEvents"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dict(create_app(load_settings()).openapi())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_operation_ids_are_stable_readable_and_unique(document: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in operations(document)}
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", i) for i in ids.values()), ids
    assert len(set(ids.values())) == len(ids)
    assert all(op.get("summary") and op.get("tags") for _, _, op in operations(document))
    assert {k: v for k, v in ids.items() if k in OPERATION_IDS} == OPERATION_IDS


def test_every_link_names_parameters_its_target_takes(document: dict[str, Any]) -> None:
    """A stateful run follows each link: one naming a parameter its target lacks is refused."""
    by_id = {op["operationId"]: op for _, _, op in operations(document)}
    wrong = [
        f"{op['operationId']} -> {link['operationId']}: {name}"
        for _, _, op in operations(document)
        for answer in op.get("responses", {}).values()
        for link in answer.get("links", {}).values()
        for name in link.get("parameters", {})
        if name not in {p["name"] for p in by_id[link["operationId"]].get("parameters", [])}
    ]
    assert wrong == []


def test_every_schema_has_examples_it_accepts(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        assert schema.get("examples"), f"{name} has no examples"
        for example in schema["examples"]:
            conforms(document, schema, example)
    for model in BODIES:  # and the API accepts the examples of what it is sent
        for example in model.model_json_schema()["examples"]:
            parse_body(model, json.dumps(example).encode())


def test_every_error_answer_is_the_envelope_with_an_example_of_each_code(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        for status, answer in op["responses"].items():
            if int(status) < 400:
                continue
            content = answer["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
            assert content["examples"], (method, path, status)
            for code, example in content["examples"].items():
                conforms(document, content["schema"], example["value"])
                assert example["value"]["error"]["code"] == code
                # A code of the catalogue, or a body field's refusal (<field>_invalid, 422).
                catalogued = CODES[code].status if code in CODES else 422
                assert str(catalogued) == status, (method, path, code)
                assert code in CODES or code.endswith("_invalid"), code


def test_every_merchant_operation_documents_the_codes_they_all_share(
    document: dict[str, Any],
) -> None:
    # A browser's CORS preflight carries no key: it is answered by the page's origin.
    merchant = [
        op for method, path, op in operations(document)
        if path.startswith("/v1/") and method != "options"
    ]  # fmt: skip
    assert {op["operationId"] for op in merchant} >= {
        i for (method, path), i in OPERATION_IDS.items()
        if path.startswith("/v1/") and method != "options"
    }  # fmt: skip
    for op in merchant:
        # What a payment's client secret opens may be asked without a key.
        browser = op["operationId"] in BROWSER_OPERATIONS
        assert op["security"] == [{"apiKey": []}, *([{}] if browser else [])]
        answers = op["responses"]
        for code in (*MERCHANT_ERRORS, CODES["internal_error"]):
            assert code.code in documented_codes(answers[str(code.status)]), op["operationId"]
        for status in ("429", "503"):
            assert answers[status]["headers"]["Retry-After"]["schema"]["type"] == "integer"
        assert answers["503"]["headers"]["Retry-After"]["required"] is True


def test_every_answer_documents_its_request_id(document: dict[str, Any]) -> None:
    for _, _, op in operations(document):
        for answer in op["responses"].values():
            assert answer["headers"]["X-Request-Id"]["required"] is True


def test_operations_with_a_body_document_the_idempotency_key_and_its_codes(
    document: dict[str, Any],
) -> None:
    posts = [op for method, _, op in operations(document) if method == "post"]
    assert posts
    for op in posts:
        [key] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
        assert (key["in"], key["required"]) == ("header", True)
        assert {"idempotency_key_missing", "idempotency_key_invalid"} <= documented_codes(
            op["responses"]["400"]
        )
        assert "idempotency_key_in_use" in documented_codes(op["responses"]["409"])
        assert "idempotency_key_reused" in documented_codes(op["responses"]["422"])
        limit = load_settings().api.max_body_bytes
        assert f"at most {limit} bytes" in op["requestBody"]["description"]
        assert "request_too_large" in documented_codes(op["responses"]["413"])


def test_the_event_stream_documents_its_frames_and_its_stream_cap(
    document: dict[str, Any],
) -> None:
    op = document["paths"]["/v1/payments/{payment_id}/events"]["get"]
    stream = op["responses"]["200"]["content"]["text/event-stream"]["schema"]
    # The body as a whole is text; each event, the payment as GET shows it and its version.
    [text, event] = stream["anyOf"]
    assert text["type"] == "string"
    frame = document["components"]["schemas"][event["$ref"].rsplit("/", 1)[1]]
    assert frame["properties"]["data"]["contentSchema"] == {
        "anyOf": [
            {"$ref": "#/components/schemas/Payment"},
            {"$ref": "#/components/schemas/PaymentView"},
        ]
    }
    assert frame["properties"]["data"]["contentMediaType"] == "application/json"
    assert frame["properties"]["id"]["pattern"] == "^[1-9][0-9]{0,8}$"
    assert {"rate_limited", "too_many_streams"} <= documented_codes(op["responses"]["429"])


def test_the_merchant_event_stream_documents_its_frames(document: dict[str, Any]) -> None:
    op = document["paths"]["/v1/events/stream"]["get"]
    [text, event] = op["responses"]["200"]["content"]["text/event-stream"]["schema"]["anyOf"]
    assert text["type"] == "string"
    frame = document["components"]["schemas"][event["$ref"].rsplit("/", 1)[1]]
    assert frame["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Event"}
    assert frame["properties"]["id"]["pattern"] == "^evt_[0-9a-f]{32}$"
    assert "last_event_id_unknown" in documented_codes(op["responses"]["409"])
    assert "last_event_id_invalid" in documented_codes(op["responses"]["400"])
    assert {"rate_limited", "too_many_streams"} <= documented_codes(op["responses"]["429"])


def _raised(source: str) -> set[tuple[int, str]]:
    """(status, code) of every error the source builds with literal ones."""
    built = re.findall(r"(?:ApiError|BadRequest)\(\s*(\d{3}),\s*\"(\w+)\"", source)
    mapped = re.findall(r"(\d{3}): \"(\w+)\"", source)
    return {(int(status), code) for status, code in [*built, *mapped]}


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "workers" / "api").glob("*.py")), ROOT / "workers/core/requests.py"],
    ids=lambda p: p.name,
)
def test_every_code_the_api_answers_with_is_catalogued_with_its_status(path: Path) -> None:
    for status, code in _raised(path.read_text()):
        assert code in CODES, f"{path.name}: {code} is not in workers.api.errors.CODES"
        assert CODES[code].status == status, f"{path.name}: {code} is {status}"


def test_the_readme_lists_every_code_with_its_status() -> None:
    rows = re.findall(r"^\| (\d{3}) \| (.+) \|$", (ROOT / "README.md").read_text(), re.MULTILINE)
    listed = {
        code: int(status) for status, codes in rows for code in re.findall(r"`([a-z_<>]+)`", codes)
    }
    assert listed == {c.code: c.status for c in CODES.values()} | {"<field>_invalid": 422}


def test_body_bounds_are_written_as_json_schema_says_them(document: dict[str, Any]) -> None:
    """Pydantic's own names for bounds ("ge", "le") mean nothing to a merchant's tooling."""
    for model in BODIES:
        schema = document["components"]["schemas"][model.__name__]
        for name, field in schema["properties"].items():
            assert not {"ge", "le", "gt", "lt"} & set(field), (model.__name__, name, field)
    amount = document["components"]["schemas"]["PaymentCreate"]["properties"]["amount"]
    assert (amount["minimum"], amount["type"]) == (1, "integer")


def test_what_a_client_secret_opens_is_documented_with_its_refusals(
    document: dict[str, Any],
) -> None:
    for method, _path, op in operations(document):
        opens = op["operationId"] in BROWSER_OPERATIONS
        params = {p["name"] for p in op.get("parameters", [])}
        assert ("client_secret" in params) == (opens or method == "options"), op["operationId"]
        if opens or method == "options":
            assert "client_secret_invalid" in documented_codes(op["responses"]["401"])
            assert "origin_not_allowed" in documented_codes(op["responses"]["403"])
    read = document["paths"]["/v1/payments/{payment_id}"]["get"]["responses"]["200"]
    view = document["components"]["schemas"]["PaymentView"]
    assert read["content"]["application/json"]["schema"]["anyOf"][1] == {
        "$ref": "#/components/schemas/PaymentView"
    }
    assert set(view["required"]) == {"id", "object", "status", "amount", "currency",
                                     "failure_reason", "next_action"}  # fmt: skip
    preflight = document["paths"]["/v1/payments/{payment_id}/events"]["options"]
    assert preflight["security"] == []
    assert "Access-Control-Allow-Origin" in preflight["responses"]["204"]["headers"]
