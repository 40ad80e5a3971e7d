"""`flowpay pay`: scripted test payments through the HTTP API, one or many, with a summary."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flowpay_cli import params
from flowpay_cli.context import settings
from flowpay_cli.output import console, print_json, print_table
from workers.api.client import ApiClient, Reply, StreamRefused
from workers.devstack.demo import demo_api_key
from workers.devstack.stack import api_url

EXIT_FAILED = 1


@dataclass
class Tally:
    replies: list[Reply] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    final: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    finals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> list[Reply]:
        return [r for r in self.replies if r.status == 202]


def pay(
    ctx: typer.Context,
    amount: Annotated[int, typer.Option(min=1, help="Amount in minor units (1999 = 19.99 USD).")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.", callback=params.currency)] = "USD",
    payment_method: Annotated[
        str, typer.Option(help="pm_card_visa, pm_card_chargeDeclined, ...")
    ] = "pm_card_visa",
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Key (with --count N: KEY-1..KEY-N).", callback=params.idempotency_key),
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="How many payments.")] = 1,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1024, help="Requests in flight at once.")
    ] = 1,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for each payment's final status.")
    ] = False,
    wait_timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 60.0,
    api_key: params.ApiKey = None,
    url: params.ApiUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Send test payments through the API; exit 1 if any request failed."""
    config = settings(ctx)
    body = {"amount": amount, "currency": currency.upper(), "payment_method": payment_method}
    base_url, key = url or api_url(config), api_key or demo_api_key(config)
    keys = _keys(idempotency_key, count)

    def client() -> ApiClient:
        return ApiClient(base_url, key)

    tally = asyncio.run(
        _run(client, body, keys, concurrency, wait, wait_timeout, quiet=as_json or count == 1)
    )
    if count == 1:
        _show_one(tally, as_json)
    else:
        _show_summary(tally, as_json)
    if tally.failures:
        raise typer.Exit(EXIT_FAILED)


def _keys(given: str | None, count: int) -> list[str]:
    if given is None:
        return [str(uuid.uuid4()) for _ in range(count)]
    return [given] if count == 1 else [f"{given}-{n}" for n in range(1, count + 1)]


async def _run(
    make_client: Callable[[], ApiClient],
    body: dict[str, Any],
    keys: list[str],
    concurrency: int,
    wait: bool,
    wait_timeout: float,
    *,
    quiet: bool,
) -> Tally:
    tally = Tally()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)
    progress = Progress(
        TextColumn("payments"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=quiet,
    )  # fmt: skip
    task = progress.add_task("pay", total=len(keys))

    async def worker() -> None:
        # One client (one connection) per worker: httpx's shared pool costs O(n^2) in connections.
        async with make_client() as client:
            while not queue.empty():
                key = queue.get_nowait()
                reply = await _send(client, body, key)
                tally.replies.append(reply)
                if reply.status != 202:
                    tally.failures[reply.error_code or str(reply.status)] += 1
                elif wait:
                    final = await _final(client, reply.body["id"], wait_timeout)
                    tally.finals.append(final)
                    tally.final[str(final.get("status"))] += 1
                progress.advance(task)

    started = time.perf_counter()
    with progress:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(keys)))))
    tally.elapsed_s = time.perf_counter() - started
    return tally


async def _send(client: ApiClient, body: dict[str, Any], key: str) -> Reply:
    try:
        return await client.create_payment(body, key)
    except Exception as exc:  # a transport failure is a failed request, counted not raised
        return Reply(0, {"error": {"code": type(exc).__name__}}, 0.0, False)


async def _final(client: ApiClient, payment_id: str, timeout_s: float) -> dict[str, Any]:
    """The payment once it is final, followed on its event stream (no polling); on timeout, as
    it last was, marked ``timed out``."""
    latest: dict[str, Any] = {"id": payment_id, "status": None}
    try:
        async with asyncio.timeout(timeout_s), aclosing(client.follow(payment_id)) as changes:
            async for payment in changes:
                latest = payment
    except TimeoutError:
        return {**latest, "status": f"{latest['status']} (timed out)"}
    except StreamRefused as refused:
        return {**latest, "status": f"unknown ({refused.reply.error_code or refused})"}
    return latest


def _show_one(tally: Tally, as_json: bool) -> None:
    reply = tally.replies[0]
    shown = tally.finals[0] if tally.finals else reply.body
    if as_json:
        print_json(shown)
        return
    title = f"HTTP {reply.status}" + (" (replayed)" if reply.replayed else "")
    print_table(title, ["field", "value"], shown.get("error", shown).items())


def _show_summary(tally: Tally, as_json: bool) -> None:
    elapsed = tally.elapsed_s
    latencies = sorted(r.seconds * 1000 for r in tally.accepted)
    cuts = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else latencies * 99
    )
    summary: dict[str, Any] = {
        "requests": len(tally.replies),
        "accepted": len(tally.accepted),
        "failed": sum(tally.failures.values()),
        "seconds": round(elapsed, 3),
        "accepted_per_s": round(len(tally.accepted) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(cuts[49], 2) if cuts else None,
        "p95_ms": round(cuts[94], 2) if cuts else None,
        "p99_ms": round(cuts[98], 2) if cuts else None,
        "errors": dict(tally.failures),
        "final_statuses": dict(tally.final),
    }
    if as_json:
        print_json(summary)
        return
    rows = [(k, v) for k, v in summary.items() if not isinstance(v, dict)]
    rows += [(f"error {code}", n) for code, n in tally.failures.items()]
    rows += [(f"final {status}", n) for status, n in tally.final.items()]
    print_table("flowpay pay", ["measure", "value"], rows)
