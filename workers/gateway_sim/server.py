"""Run the simulator under uvicorn: one process, so one writer and one seeded fault sequence."""

from __future__ import annotations

import uvicorn

from workers.core.config import Settings
from workers.gateway_sim.app import SimConfig, create_app


def serve(settings: Settings, config: SimConfig, *, host: str, port: int) -> None:
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through FlowPay's handler (JSON or text)
        access_log=False,
        timeout_graceful_shutdown=int(settings.worker.grace_period_s),
    )
