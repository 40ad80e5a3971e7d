"""What the routes of one server process share, and how a route finds it from its request."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from workers.api import shared_state
from workers.api.auth import Authenticator
from workers.api.rate_limit import RateLimiter
from workers.api.stream_quota import StreamQuota
from workers.core.config import Settings


class Services:
    """What the routes share in one server process (and, through ``shared``, with the other
    server processes of the same serve-api)."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool[Any]) -> None:
        self.settings = settings
        self.pool = pool
        shared = shared_state.for_this_process()
        limiter = RateLimiter(
            shared.rates, settings.api.rate_limit_per_s, settings.api.rate_limit_burst
        )
        self.auth = Authenticator(pool, settings.api.key_cache_s, limiter)
        self.streams = StreamQuota(shared, settings.api.max_streams_per_key)


def services_of(request: Request) -> Services:
    """The services of the server process answering ``request``."""
    services: Services = request.app.state.services
    return services
