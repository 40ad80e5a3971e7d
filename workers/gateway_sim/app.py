"""The simulator's HTTP API (FastAPI): a Stripe-like gateway with faults injected on purpose.

Only the POSTs that move money are faulted (charges, refunds, authorizations, their captures
and voids, payouts); lookups get the latency but
never a fault, and ``/_sim/*`` (the simulator's own controls) and ``/healthz`` get neither.
A request whose idempotency key is still in use by an earlier one is answered ``409
idempotency_key_in_use``, as Stripe does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from workers.core import heap
from workers.core.requests import StrictBody
from workers.gateway_sim import authorizations, payouts
from workers.gateway_sim.db import Q
from workers.gateway_sim.errors import API_ERROR, SimError, not_found, unavailable
from workers.gateway_sim.faults import Endpoint, Fault, FaultModel, FaultSettings
from workers.gateway_sim.in_progress import KeysInProgress, Release
from workers.gateway_sim.schemas import (
    AuthorizationCreate,
    CaptureCreate,
    ChargeCreate,
    PayoutCreate,
    RefundCreate,
    VoidCreate,
    check_key,
    fingerprint,
)
from workers.gateway_sim.schemas import parse_body as parse
from workers.gateway_sim.stats import Stats
from workers.gateway_sim.store import Created, Store

log = logging.getLogger(__name__)
JSON = "application/json"
Work = Callable[[], Awaitable[Response]]
B = TypeVar("B", bound=StrictBody)

# What uvicorn logs (as an error) when it closes a connection whose response never completed,
# which is exactly what a lost acknowledgement does on purpose.
_INCOMPLETE = "ASGI callable returned without completing response."


@dataclass(frozen=True)
class SimConfig:
    db_path: Path
    faults: FaultSettings
    seed: int | None
    timeout_hold_s: float


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status, media_type=JSON, headers=headers)


def error_response(error: SimError) -> Response:
    return Response(error.body(), error.status, media_type=JSON)


class LostAck(Response):
    """An answer whose headers promise a body that never comes.

    Returning after ``http.response.start`` alone makes uvicorn close the connection, so the
    client gets a transport error (httpx: ``RemoteProtocolError``), never a status to act on.
    """

    def __init__(self, answer: Response) -> None:
        super().__init__(bytes(answer.body), answer.status_code, media_type=JSON)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )


class _HideLostAcks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _INCOMPLETE


class Simulator:
    """The state one server process shares: the store, the fault model and the counters."""

    def __init__(self, config: SimConfig) -> None:
        self.store = Store(config.db_path)
        self.faults = FaultModel(config.faults, config.seed)
        self.stats = Stats()
        self.hold_s = config.timeout_hold_s
        self.keys = KeysInProgress()
        self._late: set[asyncio.Task[Response]] = set()

    @property
    def held(self) -> int:
        return len(self._late)

    async def stop(self) -> None:
        # A held request that has not acted yet never will: like a gateway that crashed.
        for task in self._late:
            task.cancel()
        await asyncio.gather(*self._late, return_exceptions=True)
        await asyncio.to_thread(self.store.close)

    async def serve(
        self,
        request: Request,
        endpoint: Endpoint,
        model: type[B],
        act: Callable[[str, B], Awaitable[Response]],
    ) -> Response:
        """A charge or refund request: counted and its fault decided on arrival (before any
        await: decisions follow arrival order), its key in use until its work is done."""
        self.stats.requests += 1
        fault = self.faults.decide(endpoint)
        key = check_key(request.headers.get("idempotency-key"))
        try:
            release = self.keys.claim(endpoint, key)
        except SimError:
            self.stats.conflicts += 1
            raise
        try:
            # Read on arrival: a client that gives up later leaves a request that was received,
            # so it is done anyway (the latency is the gateway's processing time).
            body = parse(model, await request.body())
            await asyncio.sleep(self.faults.delay_s())
            if fault is Fault.ERROR:
                self.stats.faults[fault] += 1
                raise unavailable()
        except BaseException:
            release()
            raise
        return await self._deliver(fault, lambda: act(key, body), release)

    async def _deliver(self, fault: Fault | None, work: Work, release: Release) -> Response:
        """Do the work and answer, as the fault says; the key is free once the work is done."""
        if fault is Fault.TIMEOUT:
            self.stats.faults[fault] += 1
            # A task of its own, shielded: the late charge lands even if this request is
            # cancelled because its client has long given up.
            task = asyncio.create_task(self._after_hold(work, release))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            return await asyncio.shield(task)
        try:
            answer = await _answered(work)
        finally:
            release()
        if fault is Fault.LOST_ACK:
            self.stats.faults[fault] += 1
            return LostAck(answer)
        return answer

    async def _after_hold(self, work: Work, release: Release) -> Response:
        try:
            await asyncio.sleep(self.hold_s)
            return await _answered(work)
        finally:
            release()

    async def charge(self, key: str, body: ChargeCreate) -> Response:
        created = await self.store.create_charge(key, body, fingerprint("/v1/charges", body))
        if not created.replayed:
            self.stats.charges += 1
            if created.object["status"] == "declined":
                self.stats.declines += 1
        return self._created(created)

    async def refund(self, key: str, body: RefundCreate) -> Response:
        created = await self.store.create_refund(key, body, fingerprint("/v1/refunds", body))
        if not created.replayed:
            self.stats.refunds += 1
        return self._created(created)

    async def authorize(self, key: str, body: AuthorizationCreate) -> Response:
        request_hash = fingerprint("/v1/authorizations", body)
        created = await self.store.write(
            lambda c: authorizations.create(c, key, body, request_hash)
        )
        if not created.replayed:
            self.stats.authorizations += 1
        return self._created(created)

    async def capture(self, authorization_id: str, key: str, body: CaptureCreate) -> Response:
        request_hash = fingerprint(f"/v1/authorizations/{authorization_id}/capture", body)
        created = await self.store.write(
            lambda c: authorizations.capture(c, authorization_id, key, body, request_hash)
        )
        return self._created(created)

    async def void(self, authorization_id: str, key: str, body: VoidCreate) -> Response:
        request_hash = fingerprint(f"/v1/authorizations/{authorization_id}/void", body)
        created = await self.store.write(
            lambda c: authorizations.void(c, authorization_id, key, request_hash)
        )
        return self._created(created)

    async def payout(self, key: str, body: PayoutCreate) -> Response:
        request_hash = fingerprint("/v1/payouts", body)
        created = await self.store.write(lambda c: payouts.create(c, key, body, request_hash))
        if not created.replayed:
            self.stats.payouts += 1
        return self._created(created)

    def _created(self, created: Created) -> Response:
        if created.replayed:
            self.stats.replays += 1
            return json_response(created.object, headers={"Idempotent-Replayed": "true"})
        return json_response(created.object)

    async def lookup(self) -> None:
        self.stats.lookups += 1
        await asyncio.sleep(self.faults.delay_s())


async def _answered(work: Work) -> Response:
    try:
        return await work()
    except SimError as exc:
        return error_response(exc)


def create_app(config: SimConfig) -> FastAPI:
    sim = Simulator(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sim.store.open()
        heap.settle()
        hide = _HideLostAcks()
        uvicorn_errors = logging.getLogger("uvicorn.error")
        uvicorn_errors.addFilter(hide)
        log.info("gateway simulator on %s, faults %s", config.db_path, sim.faults.settings)
        try:
            yield
        finally:
            await sim.stop()
            uvicorn_errors.removeFilter(hide)

    app = FastAPI(
        title="FlowPay gateway simulator",
        version="1",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks its providers up on every request; nothing
        # here collects them, and the simulator must stay cheap under benchmark load.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    _install_error_handlers(app)
    _install_gateway_routes(app, sim)
    _install_sim_routes(app, sim)
    return app


def _install_gateway_routes(app: FastAPI, sim: Simulator) -> None:
    @app.post("/v1/charges")
    async def create_charge(request: Request) -> Response:
        return await sim.serve(request, "charges", ChargeCreate, sim.charge)

    @app.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        return await sim.serve(request, "refunds", RefundCreate, sim.refund)

    @app.post("/v1/authorizations")
    async def create_authorization(request: Request) -> Response:
        return await sim.serve(request, "authorizations", AuthorizationCreate, sim.authorize)

    @app.post("/v1/authorizations/{authorization_id}/capture")
    async def capture_authorization(request: Request, authorization_id: str) -> Response:
        async def act(key: str, body: CaptureCreate) -> Response:
            return await sim.capture(authorization_id, key, body)

        return await sim.serve(request, "captures", CaptureCreate, act)

    @app.post("/v1/authorizations/{authorization_id}/void")
    async def void_authorization(request: Request, authorization_id: str) -> Response:
        async def act(key: str, body: VoidCreate) -> Response:
            return await sim.void(authorization_id, key, body)

        return await sim.serve(request, "voids", VoidCreate, act)

    @app.get("/v1/authorizations/{authorization_id}")
    async def get_authorization(authorization_id: str) -> Response:
        await sim.lookup()
        found = await sim.store.read(
            lambda c: c.execute(Q["authorization_by_id"], (authorization_id,)).fetchone()
        )
        if found is None:
            raise not_found("authorization")
        return json_response(authorizations.authorization_object(found))

    @app.get("/v1/authorizations")
    async def list_authorizations(request: Request) -> Response:
        await sim.lookup()
        reference = _reference(request)
        rows = await sim.store.read(
            lambda c: c.execute(Q["authorizations_by_reference"], (reference,)).fetchall()
        )
        data = [authorizations.authorization_object(row) for row in rows]
        return json_response({"object": "list", "data": data})

    @app.post("/v1/payouts")
    async def create_payout(request: Request) -> Response:
        return await sim.serve(request, "payouts", PayoutCreate, sim.payout)

    @app.get("/v1/payouts")
    async def list_payouts(request: Request) -> Response:
        await sim.lookup()
        reference = _reference(request)
        rows = await sim.store.read(
            lambda c: c.execute(Q["payouts_by_reference"], (reference,)).fetchall()
        )
        return json_response({"object": "list", "data": [payouts.payout_object(r) for r in rows]})

    @app.get("/v1/charges/{charge_id}")
    async def get_charge(charge_id: str) -> Response:
        await sim.lookup()
        charge = await sim.store.charge(charge_id)
        if charge is None:
            raise not_found("charge")
        return json_response(charge)

    @app.get("/v1/charges")
    async def list_charges(request: Request) -> Response:
        await sim.lookup()
        charges = await sim.store.charges_for(_reference(request))
        return json_response({"object": "list", "data": charges})

    @app.get("/v1/refunds")
    async def list_refunds(request: Request) -> Response:
        await sim.lookup()
        refunds = await sim.store.refunds_for(_reference(request))
        return json_response({"object": "list", "data": refunds})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


def _reference(request: Request) -> str:
    reference = request.query_params.get("reference")
    if not reference:
        raise SimError(422, "parameter_missing", "reference: a reference is required")
    return reference


def _install_sim_routes(app: FastAPI, sim: Simulator) -> None:
    @app.get("/_sim/faults")
    async def get_faults() -> Response:
        return json_response(sim.faults.settings.model_dump())

    @app.post("/_sim/faults")
    async def set_faults(request: Request) -> Response:
        settings = sim.faults.update(await request.body())
        log.info("faults now %s", settings)
        return json_response(settings.model_dump())

    @app.get("/_sim/stats")
    async def stats() -> Response:
        # "held": timeout-faulted requests that have not acted yet (their late charge is coming).
        return json_response({**sim.stats.as_json(), "held": sim.held})

    @app.get("/_sim/charges")
    async def charges() -> Response:
        return json_response({"data": await sim.store.all_charges()})

    @app.get("/_sim/authorizations")
    async def every_authorization() -> Response:
        rows = await sim.store.read(lambda c: c.execute(Q["all_authorizations"]).fetchall())
        data = [authorizations.authorization_object(r) | {"ended_at": r["ended_at"]} for r in rows]
        return json_response({"data": data})

    @app.get("/_sim/payouts")
    async def every_payout() -> Response:
        rows = await sim.store.read(lambda c: c.execute(Q["all_payouts"]).fetchall())
        return json_response({"data": [payouts.payout_object(r) for r in rows]})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SimError)
    async def sim_error(_request: Request, exc: SimError) -> Response:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        code = {404: "resource_missing", 405: "method_not_allowed"}.get(
            exc.status_code, "invalid_request"
        )
        return error_response(SimError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, _exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(SimError(500, "internal_error", "Gateway bug", type_=API_ERROR))
