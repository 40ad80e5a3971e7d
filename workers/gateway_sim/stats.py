"""What the simulator has done since this process started (``GET /_sim/stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.gateway_sim.faults import Fault


@dataclass
class Stats:
    # Only the event loop's thread touches these, so plain ints are enough.
    requests: int = 0  # POSTs that move money received (charges, refunds, authorizations...)
    lookups: int = 0  # GET /v1/charges...
    charges: int = 0  # charges created, declined ones included
    declines: int = 0
    refunds: int = 0
    authorizations: int = 0  # declined ones included
    payouts: int = 0  # failed ones included
    replays: int = 0  # answers given from an earlier request with the same key
    conflicts: int = 0  # 409s: the key's first request was still being processed
    faults: dict[Fault, int] = field(default_factory=lambda: dict.fromkeys(Fault, 0))

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "lookups": self.lookups,
            "charges": self.charges,
            "declines": self.declines,
            "refunds": self.refunds,
            "authorizations": self.authorizations,
            "payouts": self.payouts,
            "replays": self.replays,
            "conflicts": self.conflicts,
            "faults": {str(kind): count for kind, count in self.faults.items()},
        }
