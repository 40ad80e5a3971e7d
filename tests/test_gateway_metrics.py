"""Gateway request metrics are labelled by route, never by an object's id."""

from __future__ import annotations

from workers.processor.metrics import route_of


def test_an_objects_id_is_not_a_label_value() -> None:
    assert route_of("/v1/authorizations/auth_123/capture") == "/v1/authorizations/{id}/capture"
    assert route_of("/v1/authorizations/auth_9/void") == "/v1/authorizations/{id}/void"


def test_collections_keep_their_path() -> None:
    assert route_of("/v1/charges") == "/v1/charges"
    assert route_of("/v1/authorizations") == "/v1/authorizations"
