"""Merchants manage their webhook endpoints through the API, and the notifier follows: a new
endpoint is sent the event types it asked for, signed with the secret shown once; a rotated
secret signs beside the new one until it expires; a deleted one is sent nothing more.

Real roles: the API, relay, processor, gateway simulator and notifier, and a receiver.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import flowpay
from tests.helpers.flow import Flow, flow
from tests.helpers.kafka import read_topic
from tests.helpers.receiver import Receiver, receiver
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for
from workers.api.merchants import create_merchant
from workers.api.operator import add_endpoint_as_operator
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.endpoint_events import decode_endpoint_event
from workers.core.errors import NotFoundError
from workers.core.sealing import keyring
from workers.core.topics import topics
from workers.core.webhook_secrets import open_webhook_secret
from workers.core.webhooks import InvalidSignature, verify

pytestmark = pytest.mark.timeout(240)


def _call(stack: Flow, method: str, path: str, body: Any = None, key: str | None = None,
          idempotency_key: str | None = None) -> httpx.Response:  # fmt: skip
    headers = {"Authorization": f"Bearer {key or stack.api_key}"}
    if method == "POST":
        headers["Idempotency-Key"] = idempotency_key or f"we-{time.monotonic_ns()}"
    return local_http.client().request(
        method, stack.api_url + path, json=body, headers=headers, timeout=30
    )


def _delivered(hooks: Receiver, payment_id: str, count: int = 1) -> list[Any]:
    def arrived() -> list[Any]:
        return [r for r in hooks.got if r.body["data"]["id"] == payment_id]

    wait_for(lambda: len(arrived()) >= count, what=f"{count} webhooks of {payment_id}")
    return arrived()


def _deliveries_to(stack: Flow, endpoint_id: str) -> int:
    with psycopg.connect(admin_url(stack.settings)) as db:
        row = db.execute(
            "SELECT count(*) FROM notifier.deliveries WHERE endpoint_id = %s", (endpoint_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_endpoints_made_through_the_api_get_what_they_asked_signed(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as stack, receiver(free_port()) as hooks:
        stack.start("notifier", ["run-notifier"])
        made = _call(stack, "POST", "/v1/webhook_endpoints", {
            "url": hooks.url, "enabled_events": ["payment.succeeded"], "description": "orders",
        }, idempotency_key="make-1")  # fmt: skip
        assert made.status_code == 201, made.text
        endpoint = made.json()
        secret = endpoint.pop("secret")
        assert secret.startswith("whsec_")
        assert endpoint["enabled_events"] == ["payment.succeeded"]
        assert made.headers["Location"] == f"/v1/webhook_endpoints/{endpoint['id']}"
        # A retry with the key gets the answer again, without the secret (shown once).
        again = _call(stack, "POST", "/v1/webhook_endpoints", {
            "url": hooks.url, "enabled_events": ["payment.succeeded"], "description": "orders",
        }, idempotency_key="make-1")  # fmt: skip
        assert again.json() == endpoint
        assert again.headers["Idempotent-Replayed"] == "true"
        failures = _call(stack, "POST", "/v1/webhook_endpoints", {
            "url": hooks.url + "?failures", "enabled_events": ["payment.failed"],
        }).json()  # fmt: skip

        hooks.secret = secret
        # The notifier learns of endpoints from their events (another topic): an event it takes
        # before that one has no delivery to the endpoint.
        known = [endpoint["id"], failures["id"]]
        with psycopg.connect(admin_url(stack.settings), autocommit=True) as db:
            query = "SELECT count(*) FROM notifier.endpoints WHERE id = ANY(%s)"
            wait_for(lambda: db.execute(query, (known,)).fetchone() == (2,), what="endpoints known")
        paid = stack.pay()
        (got,) = _delivered(hooks, paid["id"])
        assert got.body["type"] == "payment.succeeded"
        assert got.signature_ok
        # The intake records an event's deliveries to every endpoint at once: none for the
        # endpoint that wants only failures.
        assert _deliveries_to(stack, failures["id"]) == 0

        rotated = _call(stack, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret",
                        {"expires_in_s": 3600})  # fmt: skip
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != secret
        # The rotation reaches the notifier through Kafka: the next webhook is signed by both.
        both = _signed_by_both(stack, hooks, secret, new_secret)
        assert len(both.headers["webhook-signature"].split()) == 2

        # Rotating at once: only the newest signs from then on.
        latest = _call(stack, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret",
                       {"expires_in_s": 0}).json()["secret"]  # fmt: skip
        only = _signed_only_by(stack, hooks, latest)
        for old in (secret, new_secret):
            with pytest.raises(InvalidSignature):
                verify(only.raw, only.headers, old)
        _sealed_everywhere(stack.settings, endpoint["id"], [secret, new_secret, latest])


def _sealed_everywhere(settings: Settings, endpoint_id: str, shown: list[str]) -> None:
    """The endpoint's secrets went through Kafka and are stored only sealed, for it: its
    events (two creations, two rotations in all) carry none in plain text."""
    messages = read_topic(settings, topics(settings).webhook_endpoints, 4)
    assert len(messages) == 4
    assert not [m for m in messages if b"whsec_" in (m.value() or b"")]
    events = [decode_endpoint_event(m.value()) for m in messages]
    keys = keyring(settings)
    carried = [
        open_webhook_secret(keys, e.endpoint_id, e.sealed_secret)
        for e in events
        if e.endpoint_id == endpoint_id and e.sealed_secret is not None
    ]
    assert carried == shown
    with psycopg.connect(admin_url(settings)) as db:
        rows = db.execute(
            "SELECT secret_plain, secret_sealed FROM notifier.endpoint_secrets"
            " WHERE endpoint_id = %s ORDER BY id",
            (endpoint_id,),
        ).fetchall()
    assert [plain for plain, _ in rows] == [None, None, None]
    assert not [sealed for _, sealed in rows if b"whsec_" in bytes(sealed)]


def _signed_by_both(stack: Flow, hooks: Receiver, old: str, new: str) -> Any:
    """Pay until a webhook comes signed by ``new`` (the rotation applied); it is by ``old`` too."""
    hooks.secret = old
    while True:
        got = _delivered(hooks, stack.pay()["id"])[0]
        assert got.signature_ok, "the old secret stopped signing before it expired"
        try:
            verify(got.raw, got.headers, new)
        except InvalidSignature:
            continue
        return got


def _signed_only_by(stack: Flow, hooks: Receiver, secret: str) -> Any:
    """Pay until a webhook comes signed by ``secret`` (the rotation applied)."""
    while True:
        got = _delivered(hooks, stack.pay()["id"])[0]
        try:
            verify(got.raw, got.headers, secret)
        except InvalidSignature:
            continue
        assert len(got.headers["webhook-signature"].split()) == 1
        return got


def test_endpoints_are_the_merchants_own_and_follow_its_changes(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as stack, receiver(free_port()) as hooks:
        with psycopg.connect(admin_url(settings), autocommit=True) as db:
            other = create_merchant(db, "Other")
        stack.start("notifier", ["run-notifier"])
        refused = _call(stack, "POST", "/v1/webhook_endpoints", {"url": "ftp://example.com/h"})
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "url_invalid"

        making = _call(stack, "POST", "/v1/webhook_endpoints", {"url": hooks.url})
        assert making.status_code == 201, making.text
        made = making.json()
        hooks.secret = made["secret"]
        assert made["enabled_events"] == ["*"]
        path = f"/v1/webhook_endpoints/{made['id']}"
        for method in ("GET", "DELETE"):
            theirs = _call(stack, method, path, key=other.api_key)
            assert theirs.status_code == 404, (method, theirs.text)
        stranger = _call(stack, "POST", path, {"disabled": True}, key=other.api_key)
        assert stranger.status_code == 404
        listed = _call(stack, "GET", "/v1/webhook_endpoints").json()
        assert [e["id"] for e in listed["data"]] == [made["id"]]
        assert _call(stack, "GET", "/v1/webhook_endpoints", key=other.api_key).json()["data"] == []

        changed = _call(stack, "POST", path, {"enabled_events": ["payment.failed", "*"],
                                              "description": "all"})  # fmt: skip
        assert changed.status_code == 200, changed.text
        assert changed.json()["enabled_events"] == ["*"]
        assert _call(stack, "GET", path).json()["description"] == "all"
        failed = stack.pay("pm_card_chargeDeclined")
        (got,) = _delivered(hooks, failed["id"])
        assert got.body["type"] == "payment.failed"
        assert got.signature_ok

        deleted = _call(stack, "DELETE", path)
        assert deleted.json() == {"id": made["id"], "object": "webhook_endpoint", "deleted": True}
        assert _call(stack, "GET", path).status_code == 404
        assert _call(stack, "DELETE", path).status_code == 404
        assert _call(stack, "GET", "/v1/webhook_endpoints").json()["data"] == []
        # The notifier learns of the deletion through Kafka; from then on it records nothing.
        with psycopg.connect(admin_url(settings)) as db:
            wait_for(
                lambda: (
                    db.execute(
                        "SELECT disabled_reason FROM notifier.endpoints WHERE id = %s",
                        (made["id"],),
                    ).fetchone()
                    == ("deleted",)
                ),
                what="the notifier applying the deletion",
            )
        before = _deliveries_to(stack, made["id"])
        # Another endpoint gets the next payment's webhook; the deleted one gets nothing (the
        # intake records an event's deliveries to every endpoint at once).
        with receiver(free_port()) as later:
            later.secret = _call(stack, "POST", "/v1/webhook_endpoints", {"url": later.url}).json()[
                "secret"
            ]
            paid = stack.pay()
            (got,) = _delivered(later, paid["id"])
            assert got.signature_ok
        assert _deliveries_to(stack, made["id"]) == before


def test_an_endpoint_the_operator_adds_is_the_merchants_own(
    settings: Settings, tmp_path: Path
) -> None:
    """`flowpay webhooks add-endpoint` goes the API's way: the merchant lists the endpoint, and
    the notifier learns of it from its event and signs with the secret the command printed."""
    with flow(settings, tmp_path) as stack, receiver(free_port()) as hooks:
        stack.start("notifier", ["run-notifier"])
        args = ["--merchant", stack.merchant_id, "--url", hooks.url, "--json"]
        done = flowpay("webhooks", "add-endpoint", *args, env=stack.env)
        assert done.returncode == 0, done.stderr
        added = json.loads(done.stdout)
        assert set(added) == {"id", "merchant_id", "url", "secret"}
        listed = _call(stack, "GET", "/v1/webhook_endpoints").json()["data"]
        assert [(e["id"], e["url"], e["enabled_events"]) for e in listed] == [
            (added["id"], hooks.url, ["*"])
        ]
        with psycopg.connect(admin_url(stack.settings), autocommit=True) as db:
            query = "SELECT count(*) FROM notifier.endpoints WHERE id = %s"
            wait_for(lambda: db.execute(query, (added["id"],)).fetchone() == (1,),
                     what="the notifier to learn of it")  # fmt: skip
        hooks.secret = added["secret"]
        paid = stack.pay()
        [hook] = _delivered(hooks, paid["id"])
        assert hook.signature_ok
        with pytest.raises(NotFoundError, match="no merchant mer_none"):
            add_endpoint_as_operator(stack.settings, "mer_none", hooks.url)
