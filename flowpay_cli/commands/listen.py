"""`flowpay listen`: the merchant's events, signed as webhooks, forwarded to a local server.

As ``stripe listen``, for merchants developing against FlowPay: it follows the merchant-wide
event stream (``GET /v1/events/stream``) with the merchant's API key, and POSTs each event to
``--forward-to`` as the notifier would send it as a webhook (the same body and Standard
Webhooks headers, signed by ``workers.core.webhooks``, sent by the notifier's own bounded
``post``), under a local ``whsec_`` secret printed at start. One line per event says what the
server answered. A cut stream resumes after the last event seen.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import json
import re
import sys
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import httpx
import typer

from flowpay_cli import params
from flowpay_cli.context import settings
from flowpay_cli.output import Json, console
from workers.api.client import ApiClient, StreamEvent, StreamRefused
from workers.api.events import TYPE_PATTERN
from workers.core.endpoint_events import SECRET_PREFIX, new_webhook_secret
from workers.core.errors import FlowPayError
from workers.core.ids import new_id
from workers.core.outbound_http import Outbound, PooledTransport
from workers.core.webhooks import webhook_body
from workers.devstack.demo import demo_api_key
from workers.devstack.stack import api_url
from workers.notifier.posting import USER_AGENT, Due, Result, post

STREAM: Final = "/v1/events/stream"
ENDPOINT: Final = "we_listen"  # the forward target stands for an endpoint of no id


def listen(
    ctx: typer.Context,
    forward_to: Annotated[
        str,
        typer.Option("--forward-to", help="Where to POST each event (http://localhost:3000/hook)."),
    ],
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            help="Only these event types, comma-separated; * matches any part (payment.*).",
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option("--secret", help="Sign with this whsec_ secret (default: a new one)."),
    ] = None,
    forward_timeout: Annotated[
        float, typer.Option(min=0.1, max=300, help="Seconds each forward may take at most.")
    ] = 10.0,
    api_key: params.ApiKey = None,
    url: params.ApiUrl = None,
    as_json: Json = False,
) -> None:
    """Forward your events, signed as webhooks, to a local server (until Ctrl-C)."""
    config = settings(ctx)
    patterns = _patterns(events)
    target = _target(forward_to)
    signing = _secret(secret)
    base_url, key = url or api_url(config), api_key or demo_api_key(config)
    try:
        asyncio.run(
            _forward_all(base_url, key, target, signing, patterns, forward_timeout, as_json)
        )
    except KeyboardInterrupt:
        return  # Ctrl-C: the stream is closed, nothing is half sent that matters
    except StreamRefused as refused:
        raise FlowPayError(f"the API refused the event stream: {refused}") from None


def _patterns(given: str | None) -> list[str]:
    patterns = [p.strip() for p in (given or "").split(",") if p.strip()]
    for pattern in patterns:
        if not re.fullmatch(TYPE_PATTERN, pattern):
            raise typer.BadParameter(
                f"{pattern!r} is not an event type (a-z, _, ., and * for any part)",
                param_hint="--events",
            )
    return patterns


def _target(forward_to: str) -> str:
    parsed = httpx.URL(forward_to) if "://" in forward_to else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise typer.BadParameter("must be an http(s) URL", param_hint="--forward-to")
    return forward_to


def _secret(given: str | None) -> str:
    if given is None:
        return new_webhook_secret()
    try:
        key = base64.b64decode(given.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not given.startswith(SECRET_PREFIX) or not key:
        raise typer.BadParameter("must be whsec_ and base64 of a key", param_hint="--secret")
    return given


def _say_ready(secret: str, target: str, as_json: bool) -> None:
    # The one time the secret is shown: the server being developed verifies with it.
    if as_json:
        _line({"secret": secret, "forward_to": target})
        return
    console.print(
        f"Ready! Your webhook signing secret is {secret}; forwarding to {target} (^C to quit)",
        markup=False,
        highlight=False,
        soft_wrap=True,  # one line, whatever the terminal's width
    )


async def _forward_all(
    base_url: str,
    key: str,
    target: str,
    secret: str,
    patterns: list[str],
    timeout_s: float,
    as_json: bool,
) -> None:
    query = {"type": patterns[0]} if len(patterns) == 1 else None
    ready = False

    def opened() -> None:
        """Ready once the API has taken the stream: every event from then on comes."""
        nonlocal ready
        if not ready:
            ready = True
            _say_ready(secret, target, as_json)

    async with (
        ApiClient(base_url, key, connections=1) as api,
        Outbound(PooledTransport(1), timeout_s, {"User-Agent": USER_AGENT}) as http,
        aclosing(api.stream(STREAM, params=query, on_open=opened)) as stream,
    ):
        async for frame in stream:
            event: dict[str, Any] = json.loads(frame.data)
            if patterns and not any(fnmatch.fnmatchcase(event["type"], p) for p in patterns):
                continue
            result = await post(http, _due(frame, event, target, secret), timeout_s)
            _report(event, result, as_json)


def _due(frame: StreamEvent, event: dict[str, Any], target: str, secret: str) -> Due:
    occurred = datetime.fromtimestamp(event["created"], UTC)
    body = webhook_body(event["type"], occurred, event["data"]["object"])
    return Due(new_id("msg"), ENDPOINT, target, (secret,), "enabled", body, 1,
               event_id=frame.id)  # fmt: skip


def _report(event: dict[str, Any], result: Result, as_json: bool) -> None:
    payment_id = event["data"]["object"].get("id")
    if as_json:
        _line({"event_id": event["id"], "type": event["type"], "payment_id": payment_id,
               "status": result.status_code, "error": result.error,
               "ms": result.duration_ms})  # fmt: skip
        return
    at = result.started_at.strftime("%H:%M:%S")
    answer = f"[{result.summary()}]" if result.ok else f"[!{result.summary()}]"
    console.print(
        f"{at}  --> {event['type']} {event['id']} ({payment_id})  <-- {answer}",
        markup=False,
        highlight=False,
        soft_wrap=True,  # one line, whatever the terminal's width
    )


def _line(data: dict[str, Any]) -> None:
    """One JSON line, flushed at once: a script reads events as they come."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()
