"""Run the API under uvicorn, with one or more server processes."""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn

from workers.api import metrics, read_model, shared_state
from workers.core.config import Settings


def serve(
    settings: Settings, *, host: str, port: int, workers: int, config_file: Path | None
) -> None:
    if config_file is not None:
        # Each server process loads its own settings through the factory.
        os.environ["FLOWPAY_CONFIG"] = str(config_file.resolve())
    os.environ["FLOWPAY_LOG_FORMAT"] = settings.log_format  # --log-format, for every process
    # Rate limits and stream counts, shared by the server processes (shared_state.py).
    with metrics.exposed(settings, workers), shared_state.shared_for_server(workers):
        uvicorn.run(
            "workers.api.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            log_config=None,  # uvicorn's lines go through FlowPay's handler (JSON or text)
            access_log=False,
            timeout_graceful_shutdown=int(settings.worker.grace_period_s),
        )
    if read_model.died.is_set():  # one server process, in this process: it stopped for that
        raise SystemExit(1)
