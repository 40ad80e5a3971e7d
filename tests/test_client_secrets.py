"""Client secrets and CORS against a running serve-api: what a browser may do with a payment's
``client_secret``, from which pages, and what it may not (workers/api/client_secrets.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import env_for, flowpay
from tests.helpers import api as api_fixtures
from tests.helpers.api import CARD, Api, error_of
from tests.helpers.db import Conn
from workers.api.merchants import create_merchant, set_origins
from workers.api.origins import OriginInvalid, check_origin, check_origins
from workers.core import local_http
from workers.core.config import Settings

server, settings, api = api_fixtures.server, api_fixtures.settings, api_fixtures.api
SHOP = "https://shop.example"
VIEW = {"id", "object", "status", "amount", "currency", "failure_reason", "next_action"}


def _paid(api: Api) -> dict[str, Any]:
    made = api.pay({**CARD, "metadata": {"order_id": "1042"}, "description": "Order 1042"})
    assert made.status_code == 202, made.text
    return dict(made.json())


def _browser(
    api: Api, path: str, secret: str | None, origin: str | None = None, method: str = "GET",
    **headers: str,
) -> httpx.Response:  # fmt: skip
    """A request as a browser sends it: no API key, the secret in the query string."""
    sent = {**headers, **({"Origin": origin} if origin else {})}
    params = {} if secret is None else {"client_secret": secret}
    return local_http.client().request(
        method, api.url + path, params=params, headers=sent, timeout=30
    )


def test_the_create_answer_and_the_merchants_get_carry_the_client_secret(api: Api) -> None:
    payment = _paid(api)
    secret = payment["client_secret"]
    assert secret.startswith(payment["id"] + "_secret_")
    assert len(secret) > len(payment["id"]) + 30
    assert api.get(f"/v1/payments/{payment['id']}").json()["client_secret"] == secret
    assert _paid(api)["client_secret"] != secret  # each payment its own


def test_the_secret_reads_its_payment_alone_in_a_reduced_view(api: Api) -> None:
    payment = _paid(api)
    read = _browser(api, f"/v1/payments/{payment['id']}", payment["client_secret"])
    assert read.status_code == 200, read.text
    view = read.json()
    assert set(view) == VIEW  # no metadata, description, method nor the secret itself
    assert {k: payment[k] for k in VIEW} == view
    assert "access-control-allow-origin" not in read.headers  # no Origin, no CORS


def test_a_wrong_or_other_payments_secret_is_refused_alike(api: Api, db: Conn) -> None:
    mine, other = _paid(api), _paid(api)
    theirs = Api(api.url, api.other_key, "", api.key).pay(CARD).json()
    missing = "pay_00000000000000000000000000"
    refusals = [
        _browser(api, f"/v1/payments/{mine['id']}", other["client_secret"]),
        _browser(api, f"/v1/payments/{mine['id']}", mine["client_secret"] + "x"),
        _browser(api, f"/v1/payments/{mine['id']}", mine["id"] + "_secret_guess"),
        _browser(api, f"/v1/payments/{mine['id']}", theirs["client_secret"]),
        _browser(api, f"/v1/payments/{missing}", missing + "_secret_guess"),
        _browser(api, f"/v1/payments/{mine['id']}/events", other["client_secret"]),
        _browser(api, f"/v1/payments/{missing}/events", missing + "_secret_x", origin=SHOP),
    ]
    # Whether the payment exists or not, the same answer: nothing to probe with.
    assert {(r.status_code, json.dumps(error_of(r))) for r in refusals} == {
        (401, json.dumps(error_of(refusals[0])))
    }
    assert error_of(refusals[0])["code"] == "client_secret_invalid"
    # A payment made before client secrets has none: no secret opens it.
    db.execute("UPDATE api.payments SET client_secret = NULL WHERE id = %s", (mine["id"],))
    old = _browser(api, f"/v1/payments/{mine['id']}", mine["client_secret"])
    assert (old.status_code, error_of(old)["code"]) == (401, "client_secret_invalid")


def test_the_secret_opens_nothing_else(api: Api) -> None:
    payment = _paid(api)
    secret = payment["client_secret"]
    for method, path in [
        ("GET", "/v1/payments"),
        ("POST", f"/v1/payments/{payment['id']}/refunds"),
        ("POST", f"/v1/payments/{payment['id']}/cancel"),
        ("GET", "/v1/events"),
        ("GET", "/v1/webhook_endpoints"),
    ]:
        answer = _browser(api, path, secret, method=method)
        assert (answer.status_code, error_of(answer)["code"]) == (401, "api_key_missing"), path
    # Nor does it stand in for a key sent as one.
    as_key = api.get(f"/v1/payments/{payment['id']}", key=secret)
    assert as_key.status_code == 401


def test_pages_of_allowed_origins_only(api: Api, db: Conn) -> None:
    payment = _paid(api)
    path, secret = f"/v1/payments/{payment['id']}", payment["client_secret"]
    refused = _browser(api, path, secret, origin=SHOP)
    assert (refused.status_code, error_of(refused)["code"]) == (403, "origin_not_allowed")
    assert "access-control-allow-origin" not in refused.headers

    set_origins(db, api.merchant_id, ["https://SHOP.example:443", "http://localhost:5173"])
    allowed = _browser(api, path, secret, origin=SHOP)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "Origin" in allowed.headers["vary"]
    for other in (
        "https://evil.example",
        "http://shop.example",
        "null",
        "https://shop.example:8443",
    ):
        answer = _browser(api, path, secret, origin=other)
        assert answer.status_code == 403, other
        assert "access-control-allow-origin" not in answer.headers
    # Cleared, it is refused again; another merchant's origins do not count.
    set_origins(db, create_merchant(db, "Neighbour").id, [SHOP])
    set_origins(db, api.merchant_id, [])
    assert _browser(api, path, secret, origin=SHOP).status_code == 403


@pytest.mark.parametrize("suffix", ["", "/events"])
def test_the_preflight_is_answered_for_allowed_origins_only(
    api: Api, db: Conn, suffix: str
) -> None:
    payment = _paid(api)
    path, secret = f"/v1/payments/{payment['id']}{suffix}", payment["client_secret"]
    asking = {"Access-Control-Request-Method": "GET",
              "Access-Control-Request-Headers": "last-event-id"}  # fmt: skip
    before = _browser(api, path, secret, origin=SHOP, method="OPTIONS", **asking)
    assert (before.status_code, error_of(before)["code"]) == (403, "origin_not_allowed")
    assert "access-control-allow-origin" not in before.headers

    set_origins(db, api.merchant_id, [SHOP])
    answered = _browser(api, path, secret, origin=SHOP, method="OPTIONS", **asking)
    assert answered.status_code == 204, answered.text
    assert answered.headers["access-control-allow-origin"] == SHOP
    assert answered.headers["access-control-allow-methods"] == "GET"
    assert "last-event-id" in answered.headers["access-control-allow-headers"].lower()
    wrong = _browser(api, path, secret + "x", origin=SHOP, method="OPTIONS", **asking)
    assert (wrong.status_code, error_of(wrong)["code"]) == (401, "client_secret_invalid")
    keyless = _browser(api, path, None, origin=SHOP, method="OPTIONS", **asking)
    assert keyless.status_code == 403
    # Not a preflight: what the path takes (RFC 9110).
    plain = _browser(api, path, None, method="OPTIONS")
    assert plain.status_code == 204
    assert {"GET", "OPTIONS"} <= set(plain.headers["allow"].split(", "))


def test_the_stream_opens_with_the_secret_in_the_reduced_view(api: Api, db: Conn) -> None:
    payment = _paid(api)
    set_origins(db, api.merchant_id, [SHOP])
    url = f"{api.url}/v1/payments/{payment['id']}/events"
    params = {"client_secret": payment["client_secret"]}
    with local_http.client().stream(
        "GET", url, params=params, headers={"Origin": SHOP}, timeout=30
    ) as r:
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == SHOP
        lines = r.iter_lines()
        assert next(lines) == "id: 1"
        first = json.loads(next(lines).removeprefix("data: "))
    assert set(first) == VIEW
    assert first["status"] == "initiated"


def test_origins_are_checked_as_browsers_send_them() -> None:
    assert check_origin("HTTPS://Shop.Example:443") == "https://shop.example"
    assert check_origin("http://localhost:8080") == "http://localhost:8080"
    assert check_origin("http://[::1]:3000") == "http://[::1]:3000"
    assert check_origins([SHOP, "https://shop.example:443"]) == [SHOP]
    for bad in ("ftp://a.example", "https://a.example/", "https://u@a.example", "null",
                "https://a.example?x", "https://a b.example", "https://a.example:0",
                "https://bücher.example", "", "https://"):  # fmt: skip
        with pytest.raises(OriginInvalid):
            check_origin(bad)


def test_the_origin_commands(api: Api, settings: Settings) -> None:
    env = env_for(settings)

    def run(*args: str) -> Any:
        done = flowpay("merchants", *args, "--json", env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    set_ = run("set-origins", api.merchant_id, "https://Shop.example", "http://localhost:5173")
    assert set_ == {"merchant_id": api.merchant_id,
                    "allowed_origins": [SHOP, "http://localhost:5173"]}  # fmt: skip
    assert run("origins", api.merchant_id)["allowed_origins"] == [SHOP, "http://localhost:5173"]
    assert run("clear-origins", api.merchant_id)["allowed_origins"] == []
    for args in (["set-origins", api.merchant_id, "https://shop.example/pay"],
                 ["origins", "mer_nosuchmerchant"]):  # fmt: skip
        done = flowpay("merchants", *args, env=env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert run("origins", api.merchant_id)["allowed_origins"] == []  # the bad one changed nothing
