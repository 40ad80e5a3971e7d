"""The fault model: latency, 503s, timeouts (late charges) and lost acknowledgements.

Faults are drawn from one ``random.Random(seed)``, three numbers per request that moves money
(charge, refund, authorization, capture, void, payout) whatever the rates and whichever
endpoints are faulted, so a seeded run gives the same faults for the same request sequence, and
changing one setting does not reshuffle the others. Latency jitter has a generator of its own so
that lookups, which get latency but never faults, do not shift the fault sequence.
"""

from __future__ import annotations

import json
import random
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers.gateway_sim.errors import SimError


class Fault(StrEnum):
    ERROR = "error"  # 503 at once, nothing done
    TIMEOUT = "timeout"  # held past any client timeout, then done (a late charge), then answered
    LOST_ACK = "lost_ack"  # done and committed, then the connection dropped without an answer


Endpoint = Literal["charges", "refunds", "authorizations", "captures", "voids", "payouts"]
ENDPOINTS: tuple[Endpoint, ...] = (
    "charges", "refunds", "authorizations", "captures", "voids", "payouts",
)  # fmt: skip


class FaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    latency_jitter_ms: float = Field(default=0.0, ge=0, le=600_000)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    lost_ack_rate: float = Field(default=0.0, ge=0, le=1)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    # Which requests the rates apply to: refunds alone stand for a provider's refund API
    # failing while its charges work. Latency applies to every request whatever this says.
    faulted: list[Endpoint] = Field(default_factory=lambda: list(ENDPOINTS), min_length=1)


class FaultModel:
    def __init__(self, settings: FaultSettings, seed: int | None) -> None:
        self.settings = settings
        self._faults = random.Random(seed)
        self._jitter = random.Random(None if seed is None else f"latency-{seed}")

    def delay_s(self) -> float:
        """How long a request waits before anything: latency_ms ± uniform(jitter)."""
        latency, jitter = self.settings.latency_ms, self.settings.latency_jitter_ms
        if jitter:
            latency += self._jitter.uniform(-jitter, jitter)
        return max(latency, 0.0) / 1000

    def decide(self, endpoint: Endpoint) -> Fault | None:
        """The fault for one charge or refund request: error, else timeout, else lost ack."""
        settings = self.settings
        error, timeout, lost_ack = (self._faults.random() for _ in range(3))
        if endpoint not in settings.faulted:
            return None
        if error < settings.error_rate:
            return Fault.ERROR
        if timeout < settings.timeout_rate:
            return Fault.TIMEOUT
        if lost_ack < settings.lost_ack_rate:
            return Fault.LOST_ACK
        return None

    def update(self, raw: bytes) -> FaultSettings:
        """Apply a partial update given as JSON with the flags' names; all or nothing."""
        try:
            changes: Any = json.loads(raw or b"{}")
        except ValueError:
            raise SimError(400, "body_invalid_json", "The request body is not valid JSON") from None
        if not isinstance(changes, dict):
            raise SimError(422, "body_invalid", "The request body must be a JSON object")
        try:
            self.settings = FaultSettings.model_validate(self.settings.model_dump() | changes)
        except ValidationError as exc:
            first: Any = exc.errors(include_url=False, include_input=False)[0]
            param = ".".join(str(part) for part in first["loc"])
            raise SimError(422, "parameter_invalid", f"{param}: {first['msg']}") from None
        return self.settings
