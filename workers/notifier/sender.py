"""The delivery loop: send leased webhooks concurrently, commit what they decided in rounds.

Deliveries reach the sender two ways. Fresh ones come from the intake in memory, already
leased in the transaction that recorded them (``hand_over``); the rest (retries coming due,
deliveries another process recorded, fresh ones beyond an endpoint's share) are claimed,
fairly: claims go round the endpoints (``deliveries_claim``), at most
``max_in_flight_per_endpoint`` attempts in flight to one endpoint over every notifier process,
so that one endpoint's backlog or slowness never holds up another's webhooks.

Each attempt is bounded (``posting``) and ends in a result, whatever happened. Results are
committed in rounds: one transaction records every attempt that ended since the last round
(``outcomes``) and claims as many due deliveries as there is room for, so a commit covers many
webhooks. A round that fails is taken one attempt at a time; only a database out of reach
leaves an attempt unrecorded, and then its lease lapses and it goes again, with the same
``webhook-id``. With no room, the loop waits for an attempt to end; idle, for the poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg
from opentelemetry.trace import SpanKind
from psycopg_pool import AsyncConnectionPool

from workers.core.config import NotifierSettings
from workers.core.observe import following_up
from workers.core.outbound_http import Outbound
from workers.core.sealing import Keyring
from workers.core.sql import load_queries
from workers.notifier import metrics
from workers.notifier.answers import describe
from workers.notifier.endpoint_secrets import Signing, load_secrets, no_secret
from workers.notifier.guard import GuardedTransport
from workers.notifier.outcomes import Finished, conclude, keep_for_disabled_endpoint
from workers.notifier.posting import USER_AGENT, Due, Result, post, unsigned

log = logging.getLogger(__name__)
Q = load_queries("workers.notifier")

__all__ = ["Due", "Sender", "http_client"]


def http_client(config: NotifierSettings) -> Outbound:
    """What every attempt goes through: checked addresses, no redirects, no proxies, no
    cookies, and a kept-alive connection for each attempt that can be in flight."""
    return Outbound(
        GuardedTransport(config, config.max_concurrent),
        config.attempt_deadline_s,
        {"User-Agent": USER_AGENT},
    )


class Sender:
    def __init__(
        self, config: NotifierSettings, pool: AsyncConnectionPool[Any], keys: Keyring
    ) -> None:
        self.config = config
        self.pool = pool
        self.keys = keys  # they open the endpoints' secrets, for the intake's deliveries too
        self._tasks: set[asyncio.Task[None]] = set()
        self._reserved = 0  # slots the intake holds for deliveries it is recording
        self._finished: list[Finished] = []
        self._wake = asyncio.Event()
        # Made now, so that a delivery handed over before ``run`` starts has it.
        self._http = http_client(config)

    @property
    def room(self) -> int:
        return self.config.max_concurrent - len(self._tasks) - self._reserved

    def reserve(self, wanted: int) -> int:
        """Hold up to ``wanted`` slots for deliveries about to be leased; how many it got."""
        got = max(0, min(wanted, self.room))
        self._reserved += got
        return got

    def hand_over(self, leased: Sequence[Due], reserved: int) -> None:
        """Send deliveries leased for this sender (up to ``reserved``, held before), now."""
        self._reserved -= reserved
        for delivery in leased:
            self._start(delivery)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set; then the attempts in flight end and are recorded."""
        async with self._http:
            next_claim = 0.0
            while not stopping.is_set():
                if not self._finished:
                    await self._wait(stopping, next_claim)
                claim = self.room > 0 and (bool(self._finished) or time.monotonic() >= next_claim)
                started = await self._round(self.room if claim else 0)
                if claim and started < self.room:  # nothing more due now: ask again at the poll
                    next_claim = time.monotonic() + self.config.poll_interval_s
            await self._drain()

    async def _wait(self, stopping: asyncio.Event, next_claim: float) -> None:
        """Until an attempt ends, a stop, or (with room) the next claim is due."""
        timeout = max(0.0, next_claim - time.monotonic()) if self.room > 0 else None
        self._wake.clear()
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.config.attempt_deadline_s + 1)
        if self._finished:
            await self._round(0)

    async def _round(self, room: int) -> int:
        """Record what has finished and claim up to ``room``: one transaction; how many
        deliveries it started."""
        finished, self._finished = self._finished, []
        try:
            outcomes, due = await self._commit(finished, room)
        except psycopg.OperationalError as exc:
            # The database restarting or out of reach: these attempts' leases lapse and they
            # go again; claims resume once it is back.
            log.warning("%d webhook attempt(s) not recorded (%s); they will be retried",
                        len(finished), exc)  # fmt: skip
            return 0
        except Exception as exc:
            log.warning("a round of %d attempts failed (%r); each alone", len(finished), exc)
            self._report(await self._record_each(finished))
            return 0
        self._report(list(zip(finished, outcomes, strict=True)))
        for delivery in due:
            self._start(delivery)
        return len(due)

    async def _record_each(self, finished: list[Finished]) -> list[tuple[Finished, str]]:
        recorded = []
        for one in finished:
            try:
                recorded.append((one, await self.record(*one)))
            except psycopg.OperationalError as exc:
                log.warning("webhook attempt of %s not recorded (%s); it will be retried",
                            one[0].id, exc)  # fmt: skip
        return recorded

    async def _commit(self, finished: list[Finished], room: int) -> tuple[list[str], list[Due]]:
        if not finished and room <= 0:
            return [], []
        async with self.pool.connection() as conn, conn.transaction():
            outcomes = await conclude(conn, self.config, finished) if finished else []
            if room > 0:
                # The claims' turn only now, held to the commit: what was just recorded is out
                # of the count of attempts in flight, and the turn is held as briefly as it can
                # be (the intakes wait for it too). The rows recorded above are locked by this
                # transaction; a claim in another process skips them rather than waiting.
                await conn.execute(Q["deliveries_claim_lock"])
                due = await self._claim(conn, room)
            else:
                due = []
        return outcomes, due

    async def _claim(self, conn: psycopg.AsyncConnection[Any], limit: int) -> list[Due]:
        params = {
            "limit": limit,
            "lease_s": self.config.lease_s,
            "per_endpoint": self.config.max_in_flight_per_endpoint,
        }
        cursor = await conn.execute(Q["deliveries_claim"], params)
        rows = await cursor.fetchall()
        signing = await load_secrets(conn, self.keys, (row[1] for row in rows))
        return [self._due(row, signing) for row in rows]

    def _due(self, row: tuple[Any, ...], signing: dict[str, Signing]) -> Due:
        delivery_id, endpoint_id, url, *rest = row
        status, body, attempts, payment_id, event_id, correlation_id, traceparent = rest
        secrets = signing.get(endpoint_id) or no_secret(endpoint_id)
        return Due(
            delivery_id, endpoint_id, url, secrets.secrets, status, bytes(body), attempts,
            payment_id, event_id, correlation_id, traceparent, secret_error=secrets.error,
        )  # fmt: skip

    def _start(self, delivery: Due) -> None:
        task = asyncio.create_task(self._send(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, delivery: Due) -> None:
        try:
            if delivery.endpoint_status != "enabled":
                async with self.pool.connection() as conn:
                    await keep_for_disabled_endpoint(conn, delivery)
                return
            if delivery.secret_error is not None:
                result = unsigned(delivery.secret_error)
            else:
                result = await self.attempt(self._http, delivery)
        except psycopg.OperationalError as exc:  # the pool's timeouts and closing included
            log.warning(
                "webhook delivery %s not recorded (%s); it will be retried", delivery.id, exc
            )
            return
        except Exception:  # a task must not end with an exception nobody retrieves
            log.exception("webhook delivery %s not sent; it will be retried", delivery.id)
            return
        self._finished.append((delivery, result))
        self._wake.set()

    async def attempt(self, http: Outbound, delivery: Due) -> Result:
        """One POST, with the event's ids on its log lines and a span in the event's trace."""
        with following_up(
            f"webhook attempt {delivery.attempts + 1}",
            delivery.traceparent,
            SpanKind.CLIENT,
            level=logging.DEBUG,
            payment_id=delivery.payment_id,
            event_id=delivery.event_id,
            correlation_id=delivery.correlation_id,
        ):
            return await post(http, delivery, self.config.attempt_deadline_s)

    async def record(self, delivery: Due, result: Result) -> str:
        """One attempt and what it decides, alone in its transaction, recorded whatever goes
        wrong (without the answer's body when the database refuses it)."""
        try:
            return await self._commit_one(delivery, result)
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            # Something of the answer the database would not take, or a fault of ours: the
            # attempt is recorded all the same, without the answer's body, naming the fault.
            log.warning("webhook attempt recorded without its answer: %s", describe(exc))
            failed = dataclasses.replace(result, error=describe(exc), head=None)
            return await self._commit_one(delivery, failed)

    async def _commit_one(self, delivery: Due, result: Result) -> str:
        async with self.pool.connection() as conn, conn.transaction():
            [outcome] = await conclude(conn, self.config, [(delivery, result)])
        return outcome

    def _report(self, recorded: list[tuple[Finished, str]]) -> None:
        for (delivery, result), outcome in recorded:
            metrics.attempted(outcome, delivery.attempts + 1)
            log.log(
                logging.DEBUG if outcome == "delivered" else logging.INFO,
                "webhook attempt %d of %s to endpoint %s: %s; %s",
                delivery.attempts + 1, delivery.id, delivery.endpoint_id, result.summary(),
                outcome, extra={"payment_id": delivery.payment_id, "event_id": delivery.event_id,
                                "correlation_id": delivery.correlation_id},
            )  # fmt: skip
        if recorded:
            counts = Counter(outcome for _one, outcome in recorded)
            log.info(
                "webhook attempts recorded: %d (%s)",
                len(recorded), ", ".join(f"{n} {o}" for o, n in sorted(counts.items())),
            )  # fmt: skip
